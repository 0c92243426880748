"""`genos images` as a user runs it, against the test session's cached store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genos.runtime.images import ImageStore, Layer

pytestmark = pytest.mark.root


def genos(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GENOS_DATA_DIR": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "genos", "images", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_build_finds_cached_layers_and_ls_lists_them(
    image_store: ImageStore, desktop_layers: list[Layer], tmp_path: Path
) -> None:
    """Building a cached spec prints each layer as cached; ls lists their digests."""
    root = image_store.root.parent
    spec = tmp_path / "env.yaml"
    spec.write_text("apiVersion: genos/v1\n")
    done = genos(root, "build", "-f", str(spec))
    assert done.returncode == 0, done.stderr
    assert f"layer 1/2 base {desktop_layers[0].digest[:12]}: cached" in done.stdout
    assert f"layer 2/2 desktop {desktop_layers[1].digest[:12]}: cached" in done.stdout
    listed = genos(root, "ls").stdout
    assert all(layer.digest[:12] in listed for layer in desktop_layers)


def test_unknown_layer_and_bad_spec_are_one_line(image_store: ImageStore, tmp_path: Path) -> None:
    """rm of an unknown digest and build of an invalid spec fail in one line."""
    root = image_store.root.parent
    done = genos(root, "rm", "ffffffffffff")
    assert (done.returncode, done.stderr.count("\n")) == (1, 1)
    assert "no layer" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("privileged: true\n")
    done = genos(root, "build", "-f", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == "genos: invalid spec: privileged: Extra inputs are not permitted"
