"""How safe_sync reads rsync: escaped names, itemized lines, and the deletion passes built from a plan."""

from __future__ import annotations

import pytest
from ansible_collections.postmortem.remediation.plugins.module_utils import _rsync


@pytest.mark.parametrize(("printed", "name"), [
    ("plain.deb", "plain.deb"),
    ("paquet-\\#303\\#274.deb", "paquet-ü.deb"),  # UTF-8 bytes, escaped under LC_ALL=C
    ("latin1-\\#351.deb", "latin1-\udce9.deb"),  # not UTF-8: kept as a surrogate, the same bytes on the way back
    ("new\\#012line", "new\nline"),
    ("back\\#134#slash", "back\\#slash"),  # a literal backslash before '#' is itself escaped by rsync
    ("not\\#99escape", "not\\#99escape"),
])
def test_decode_name(printed: str, name: str) -> None:
    assert _rsync.decode_name(printed) == name


def test_names_go_back_as_the_same_bytes() -> None:
    assert _rsync.encode_name(_rsync.decode_name("latin1-\\#351.deb")) == b"latin1-\xe9.deb"


def test_parse_reads_deletions_transfers_and_the_file_count() -> None:
    out = "\n".join([
        "*deleting   old/deeper/a.deb", "*deleting   old/deeper/", "*deleting   old/", "*deleting   x\\#303\\#251.deb",
        ">f+++++++++ new.deb", "cL+++++++++ link -> new.deb", ".d..t...... ./",
        "Number of files: 5 (reg: 3, dir: 1, link: 1)",
    ])
    plan = _rsync.RsyncPlan.parse(out)
    assert plan.deleted_files == ["old/deeper/a.deb", "xé.deb"]
    assert plan.deleted_dirs == ["old/deeper/", "old/"]
    assert plan.transferred == ["new.deb"]
    assert plan.source_files == 4
    # Files first, then directories deepest first: rsync removes a directory here only once it is empty.
    assert plan.deletion_passes() == [["old/deeper/a.deb", "xé.deb"], ["old/deeper"], ["old"]]


def test_kept_directories_are_read_from_rsync_errors() -> None:
    err = "cannot delete non-empty directory: old\nfile has vanished: \"/src/old\"\n"
    assert _rsync.not_deleted_dirs(err) == ["old/"]


def test_transfer_list_names_each_planned_path_and_no_directory_content() -> None:
    """--files-from sends the content of 'dir/' or '.' one level deep: a directory is listed bare, the root as '.'."""
    out = "\n".join([
        ".d..t...... ./", "cd+++++++++ new/", ">f+++++++++ new/a.deb", ".d..t...... old/", ">f.st...... old/b.deb",
        "cL+++++++++ new/link -> a.deb", "*deleting   old/c.deb", "paquet-\\#303\\#274.deb is not an item line",
        ">f+++++++++ paquet-\\#303\\#274.deb",
    ])
    plan = _rsync.RsyncPlan.parse(out)
    assert plan.transfer_list() == [".", "new", "new/a.deb", "old", "old/b.deb", "new/link", "paquet-ü.deb"]
    assert plan.deleted_files == ["old/c.deb"]  # never on the transfer list
