"""Model downloads against a local hub: checks, lock files, gated repos, failures that leave nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cutout_guard.comfyui import host
from cutout_guard.core.download import download_folder, obtain
from cutout_guard.core.errors import ModelCorrupt, ModelMissing
from cutout_guard.core.models import BEN2, KINDS, DefaultModel, ModelKind, RemoteFile, lock_path, verify
from devtools.synthetic.ben2 import build_ben2


@pytest.fixture
def tiny_bytes(tmp_path):
    return build_ben2(tmp_path / "src.onnx", size=32).read_bytes()


def kind_for(data: bytes, *, pin=True, repo="PramaLLC/BEN2"):
    """A BEN2 kind whose default is the tiny model (pinned like the real one)."""
    remote = RemoteFile("BEN2_Base.onnx", size=len(data) if pin else None, sha256=hashlib.sha256(data).hexdigest() if pin else None)
    return ModelKind("ben2", "ben2", (".onnx",), (DefaultModel("BEN2_Base.onnx", repo, (remote,)),), label="BEN2")


def test_download_checks_hash_renames_and_writes_lock(hub, tmp_path, tiny_bytes):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    seen = []
    path = obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [tmp_path / "ben2"], progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "ben2" / "BEN2_Base.onnx"
    assert path.read_bytes() == tiny_bytes
    lock = lock_path(path).read_text()
    assert hashlib.sha256(tiny_bytes).hexdigest() in lock and "PramaLLC/BEN2" in lock
    assert seen and seen[-1][0] == len(tiny_bytes) == seen[-1][1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["BEN2_Base.onnx", "BEN2_Base.onnx.lock.json"]
    # a second call finds it: no more requests to the hub
    before = len(hub.state.requests)
    assert obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [tmp_path / "ben2"]) == path
    assert len(hub.state.requests) == before


def test_real_pins_reject_a_different_file(hub, tmp_path, tiny_bytes):
    """The published size and sha256 of BEN2_Base.onnx are pinned: another file never installs."""
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    with pytest.raises(ModelCorrupt, match="222,932,053"):
        obtain(BEN2, "BEN2_Base.onnx", [tmp_path / "ben2"])
    assert list((tmp_path / "ben2").iterdir()) == []


def test_hub_hash_mismatch_installs_nothing(hub, tmp_path, tiny_bytes):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    hub.state.lie_sha.add("BEN2_Base.onnx")
    with pytest.raises(ModelCorrupt, match="sha256"):
        obtain(kind_for(tiny_bytes, pin=False), "BEN2_Base.onnx", [tmp_path / "ben2"])
    assert list((tmp_path / "ben2").iterdir()) == []


def test_interrupted_transfer_installs_nothing(hub, tmp_path, tiny_bytes):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    hub.state.truncate.add("BEN2_Base.onnx")
    with pytest.raises((ModelMissing, ModelCorrupt)):
        obtain(kind_for(tiny_bytes, pin=False), "BEN2_Base.onnx", [tmp_path / "ben2"])
    assert list((tmp_path / "ben2").iterdir()) == []


def test_gated_repo_says_accept_licence_and_set_token(hub, tmp_path, tiny_bytes, monkeypatch):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    hub.state.gated.add("PramaLLC/BEN2")
    with pytest.raises(ModelMissing) as info:
        obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [tmp_path / "ben2"])
    assert "HF_TOKEN" in str(info.value) and "licence" in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    path = obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [tmp_path / "ben2"])
    assert path.is_file() and "Bearer hf_test_token" in hub.state.tokens_seen


def test_unreachable_hub_names_path_and_fix(tmp_path, monkeypatch, tiny_bytes):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with pytest.raises(ModelMissing) as info:
        obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [tmp_path / "ben2"])
    message = str(info.value)
    assert str(tmp_path / "ben2" / "BEN2_Base.onnx") in message and "install.py --models ben2" in message


def test_truncated_file_after_install_is_caught(hub, tmp_path, tiny_bytes):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    kind = kind_for(tiny_bytes)
    path = obtain(kind, "BEN2_Base.onnx", [tmp_path / "ben2"])
    path.write_bytes(tiny_bytes[:100])
    with pytest.raises(ModelCorrupt, match="has 100 bytes"):
        verify(kind, path)


def test_replaced_file_of_same_size_is_caught_by_hash(hub, tmp_path, tiny_bytes):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    kind = kind_for(tiny_bytes)
    path = obtain(kind, "BEN2_Base.onnx", [tmp_path / "ben2"])
    damaged = bytearray(tiny_bytes)
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(1, 1))
    with pytest.raises(ModelCorrupt, match="sha256"):
        verify(kind, path)


def test_file_put_by_hand_is_checked_against_pins(tmp_path, tiny_bytes):
    folder = tmp_path / "ben2"
    folder.mkdir()
    (folder / "BEN2_Base.onnx").write_bytes(tiny_bytes)
    kind = kind_for(tiny_bytes)
    assert obtain(kind, "BEN2_Base.onnx", [folder]) == folder / "BEN2_Base.onnx"
    assert lock_path(folder / "BEN2_Base.onnx").is_file()  # verified once, then recorded
    (folder / "BEN2_Base.onnx.lock.json").unlink()
    (folder / "BEN2_Base.onnx").write_bytes(tiny_bytes[:-1])
    with pytest.raises(ModelCorrupt):
        obtain(kind, "BEN2_Base.onnx", [folder])


def test_node_downloads_default_into_first_model_folder(hub, models_dir, tiny_bytes, monkeypatch):
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    monkeypatch.setitem(KINDS, "ben2", kind_for(tiny_bytes))
    path = host.model_path("ben2", "BEN2_Base.onnx")
    assert path == models_dir / "ben2" / "BEN2_Base.onnx" and path.read_bytes() == tiny_bytes


def _unmounted_volume(tmp_path) -> Path:
    """A folder whose whole path is missing down to the filesystem root, like /runpod-volume/models/ben2
    on a worker without a network volume (the name is unique, so nothing else made it)."""
    volume = Path(tmp_path.anchor) / f"cutout-guard-test-volume-{os.getpid()}-{tmp_path.name}"
    assert not volume.exists()
    return volume / "models" / "ben2"


def test_download_skips_a_volume_that_is_not_mounted(hub, tmp_path, tiny_bytes):
    """Regression: downloads went to /runpod-volume/models/... (the first folder) with no volume attached."""
    hub.add("PramaLLC/BEN2", "BEN2_Base.onnx", tiny_bytes)
    unmounted, image_folder = _unmounted_volume(tmp_path), tmp_path / "comfyui" / "models" / "ben2"
    path = obtain(kind_for(tiny_bytes), "BEN2_Base.onnx", [unmounted, image_folder])
    assert path == image_folder / "BEN2_Base.onnx" and path.read_bytes() == tiny_bytes
    assert not unmounted.parents[1].exists()


def test_download_goes_to_the_volume_when_it_is_mounted(tmp_path):
    volume, image_folder = tmp_path / "runpod-volume", tmp_path / "comfyui" / "models" / "ben2"
    image_folder.mkdir(parents=True)
    volume.mkdir()  # mounted, but no models/ben2 on it yet: made there, not in the image
    assert download_folder([volume / "models" / "ben2", image_folder]) == volume / "models" / "ben2"
    assert download_folder([_unmounted_volume(tmp_path), image_folder]) == image_folder


def test_with_no_usable_folder_the_first_is_named(tmp_path):
    only = _unmounted_volume(tmp_path)
    assert download_folder([only]) == only
    with pytest.raises(ModelMissing, match=str(only)):
        obtain(kind_for(b"x"), "BEN2_Base.onnx", [only], allow_download=False)


def test_names_outside_the_folder_are_refused(tmp_path):
    with pytest.raises(ModelMissing, match="inside the model folder"):
        obtain(BEN2, "../../etc/passwd", [tmp_path])
