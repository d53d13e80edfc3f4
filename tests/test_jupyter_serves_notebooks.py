"""`jupyter lab` starts in the lab's folder and serves the notebooks: a reader's first step."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from support import jupyter_lab

ROOT = Path(__file__).resolve().parent.parent


def test_jupyter_lab_serves_the_notebook_list(tmp_path: Path) -> None:
    with jupyter_lab(ROOT, tmp_path) as lab:
        listing = lab.get_json("/api/contents/notebooks")
        served = sorted(  # the folder's notebooks; its license notice is served too
            item["name"]
            for item in listing["content"]  # type: ignore[index]
            if item["type"] == "notebook"
        )
        on_disk = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
        assert served == on_disk
        assert "00_start_here.ipynb" in served
        with urllib.request.urlopen(lab.url("/lab"), timeout=10) as page:
            assert page.status == 200
