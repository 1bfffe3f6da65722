"""The committed stubs in wisp/v1 are exactly what the pinned protoc makes of proto/wisp/v1."""

from __future__ import annotations

import filecmp
from pathlib import Path

from wisp import protogen


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    (tmp_path / "wisp" / "v1").mkdir(parents=True)
    fresh = protogen.generate(tmp_path)
    committed = protogen.generated_files(protogen.ROOT)
    assert fresh, "protoc generated nothing"
    assert sorted(fresh) == sorted(committed), "run `python -m wisp.protogen` (missing or stale stubs)"
    differing = [
        str(rel) for rel in fresh if not filecmp.cmp(tmp_path / rel, protogen.ROOT / rel, shallow=False)
    ]
    assert not differing, f"stubs out of date, run `python -m wisp.protogen`: {differing}"


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    """``--check`` logic names an edited stub and a stale one."""
    repo = tmp_path / "repo"
    (repo / "wisp" / "v1").mkdir(parents=True)
    (repo / "proto").symlink_to(protogen.PROTO_ROOT)
    protogen.generate(repo, repo / "proto")
    assert protogen.drift(repo) == []
    (repo / "wisp/v1/frame_pb2.py").write_text("# edited\n")
    (repo / "wisp/v1/gone_pb2.py").write_text("# stale\n")
    problems = protogen.drift(repo)
    assert any(p.startswith("wisp/v1/frame_pb2.py: differs") for p in problems)
    assert any(p.startswith("wisp/v1/gone_pb2.py: stale") for p in problems)
    assert len(problems) == 2
