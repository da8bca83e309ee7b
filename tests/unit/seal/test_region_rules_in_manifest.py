"""The manifest keeps the ordered region rules, so a later rule can take a path back out of an
unprotected region and the engine still refuses files the host adds there."""

import pytest

from citadel.errors import TamperedImage
from citadel.seal.format import ENCRYPTED, UNPROTECTED
from citadel.seal.image import SealedImage
from citadel.seal.sealer import seal_tree


def test_file_added_where_a_later_rule_re_encrypts_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "a.txt").write_text("sealed log")
    (src / "app.py").write_text("print(1)\n")
    result = seal_tree(str(src), str(tmp_path / "img"), rules=[("logs", UNPROTECTED), ("logs/*", ENCRYPTED)])
    image = SealedImage.open(str(tmp_path / "img"), result.key, result.tag)
    assert image.region_of("logs/a.txt") == ENCRYPTED
    (tmp_path / "img" / "logs" / "planted.py").write_text("print('host code')\n")
    with pytest.raises(TamperedImage) as info:
        SealedImage.open(str(tmp_path / "img"), result.key, result.tag)
    assert info.value.path == "logs/planted.py"


def test_file_added_in_an_unprotected_region_is_accepted_as_unprotected(tmp_path):
    src = tmp_path / "src"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "old.bin").write_bytes(b"\1")
    (src / "app.py").write_text("print(1)\n")
    result = seal_tree(str(src), str(tmp_path / "img"), rules=[("cache", UNPROTECTED)])
    (tmp_path / "img" / "cache" / "new.bin").write_bytes(b"\0")
    image = SealedImage.open(str(tmp_path / "img"), result.key, result.tag)
    assert image.region_of("cache/new.bin") == UNPROTECTED
