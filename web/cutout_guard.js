// Shows each saved image's verdicts and caption on the Save Cutout Report node: one line per image
// with the overall verdict, the image check's and the text check's (each with its p_unsafe; "not
// checked" when that check did not run), the violated categories and the caption.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE = "CutoutGuardSaveReport";
const WIDGET = "verdicts";

app.registerExtension({
  name: "CutoutGuard.SaveReportText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      let widget = this.widgets?.find((w) => w.name === WIDGET);
      if (!widget) {
        widget = ComfyWidgets.STRING(this, WIDGET, ["STRING", { multiline: true }], app).widget;
        widget.serialize = false; // shown, never saved into the workflow
        if (widget.inputEl) widget.inputEl.readOnly = true;
      }
      widget.value = text;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
