"""Readers, splits and dataset cards on real and deliberately broken data."""
from __future__ import annotations

import hashlib
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_folder, shared
from vision.data import cards
from vision.data.classification import ClassificationDataModule
from vision.data.readers import ImageFolderSource, NEUDETSource
from vision.data.splits import SplitSpec, apply_saved, keys_of, stratified_split
from vision.errors import DataError


def _dm(root, **kw):
    return ClassificationDataModule({"images": ImageFolderSource(str(root))}, preprocess={"size": [32, 32]}, **kw)


# -- real data -----------------------------------------------------------------------------------
def test_neu_det_reader_matches_its_card():
    root = shared("neu_det")
    src = NEUDETSource(str(root))
    samples = src.load()
    assert len(samples) == 1500
    counts = {c: sum(s.label == c for s in samples) for c in NEUDETSource.CLASSES}
    assert set(counts.values()) == {250}
    assert sum(s.meta["num_boxes"] for s in samples) == 3482
    card = src.card()
    assert card["counts"]["images"] == 1500 and "research" in card["licence"]


def test_neu_det_split_is_stratified_disjoint_and_seeded():
    root = shared("neu_det")
    samples = NEUDETSource(str(root), verify_checksums=False, validate_images=False).load()
    a = stratified_split(samples, SplitSpec(seed=1))
    b = stratified_split(samples, SplitSpec(seed=1))
    c = stratified_split(samples, SplitSpec(seed=2))
    assert keys_of(a) == keys_of(b) and keys_of(a) != keys_of(c)
    assert [len(a[k]) for k in ("train", "val", "test")] == [1200, 150, 150]
    for split in a.values():  # 80/10/10 in every class
        per = {s.label for s in split}
        assert len(per) == 6
    assert {s.label for s in a["test"]} == set(NEUDETSource.CLASSES)
    assert sum(s.label == "crazing" for s in a["test"]) == 25
    k = keys_of(a)
    assert not (set(k["train"]) & set(k["test"])) and not (set(k["val"]) & set(k["test"]))


# -- bad input: every case names the file and the problem ----------------------------------------
def test_corrupt_and_truncated_images_are_named(tiny_folder):
    bad = tiny_folder / "flat" / "flat_000.png"
    bad.write_bytes(b"this is not an image")
    trunc = tiny_folder / "blobs" / "blobs_001.png"
    trunc.write_bytes(trunc.read_bytes()[:60])
    with pytest.raises(DataError) as e:
        ImageFolderSource(str(tiny_folder)).load()
    msg = str(e.value)
    assert str(bad) in msg and str(trunc) in msg and "corrupt or truncated" in msg


def test_unknown_label_in_image_folder(tiny_folder):
    with pytest.raises(DataError, match=r"unknown label 'stripes'"):
        ImageFolderSource(str(tiny_folder), classes=["blobs", "flat"]).load()
    dm = ClassificationDataModule({"images": ImageFolderSource(str(tiny_folder))}, classes=["blobs", "flat"])
    with pytest.raises(DataError, match=r"stripes_\d+\.png: unknown label 'stripes'"):
        dm.setup()


def test_non_image_file_is_reported(tiny_folder):
    (tiny_folder / "flat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file"):
        ImageFolderSource(str(tiny_folder)).load()


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: image-folder dataset .* folder not found"):
        ImageFolderSource(str(tmp_path / "nowhere")).load()
    with pytest.raises(DataError, match=r"NEU-DET dataset folder not found"):
        NEUDETSource(str(tmp_path / "neu"), card=None).load()


def test_empty_split_is_an_error(tmp_path):
    root = make_tiny_folder(tmp_path / "few", per_class=2)
    with pytest.raises(DataError, match=r"split 'val' is empty"):
        _dm(root).setup()


def _mini_neu(tmp_path, n=3):
    src = shared("neu_det")
    root = tmp_path / "neu"
    (root / "IMAGES").mkdir(parents=True)
    (root / "ANNOTATIONS").mkdir()
    for c in NEUDETSource.CLASSES:
        for i in range(1, n + 1):
            shutil.copy(src / "IMAGES" / f"{c}_{i}.jpg", root / "IMAGES")
            shutil.copy(src / "ANNOTATIONS" / f"{c}_{i}.xml", root / "ANNOTATIONS")
    return root


def test_unreadable_xml_and_bad_boxes(tmp_path):
    root = _mini_neu(tmp_path)
    (root / "ANNOTATIONS" / "crazing_1.xml").write_text("<annotation><size>")
    xml = root / "ANNOTATIONS" / "patches_2.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9", 1))
    with pytest.raises(DataError) as e:
        NEUDETSource(str(root), card=None).load()
    msg = str(e.value)
    assert "crazing_1.xml: unreadable VOC xml" in msg
    assert "patches_2.xml: object #1 box" in msg and "outside" in msg


def test_neu_unknown_label_and_missing_annotation(tmp_path):
    root = _mini_neu(tmp_path)
    shutil.copy(root / "IMAGES" / "crazing_1.jpg", root / "IMAGES" / "rust_1.jpg")
    (root / "ANNOTATIONS" / "scratches_3.xml").unlink()
    with pytest.raises(DataError) as e:
        NEUDETSource(str(root), card=None).load()
    assert "rust_1.jpg: unknown label 'rust'" in str(e.value)
    assert "scratches_3.xml: annotation file missing" in str(e.value)


def test_card_checksums_catch_changed_missing_and_extra_files(tmp_path):
    root = tmp_path / "neu"
    shutil.copytree(shared("neu_det"), root)
    changed = root / "IMAGES" / "patches_7.jpg"
    changed.write_bytes(changed.read_bytes()[:-1] + b"\x00")
    (root / "ANNOTATIONS" / "scratches_9.xml").unlink()
    shutil.copy(root / "IMAGES" / "crazing_1.jpg", root / "IMAGES" / "crazing_999.jpg")
    with pytest.raises(DataError, match=r"does not match its card") as e:
        cards.verify(cards.load_card("neu_det"), root)
    msg = str(e.value)
    assert f"{changed}: checksum mismatch" in msg
    assert "scratches_9.xml: missing" in msg
    assert "crazing_999.jpg: not listed in the card's checksums" in msg
    with pytest.raises(DataError, match="checksum mismatch"):  # the reader verifies by default
        NEUDETSource(str(root)).load()


def test_real_neu_det_verifies_against_card():
    assert cards.verify(cards.load_card("neu_det"), shared("neu_det")) == 3000


# -- splits saved and re-applied ------------------------------------------------------------------
def test_saved_split_is_reapplied_and_checked(tiny_folder, tmp_path):
    dm = _dm(tiny_folder, seed=3)
    dm.setup()
    state = dm.state_dict()
    dm2 = _dm(tiny_folder, seed=99)  # another seed, but the checkpoint's split wins
    dm2.load_state_dict(state)
    dm2.setup()
    assert keys_of(dm2.splits) == keys_of(dm.splits)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tiny_folder / "flat" / "new.png")
    with pytest.raises(DataError, match=r"in no saved split"):
        apply_saved(ImageFolderSource(str(tiny_folder), name="images").load(), state["splits"], "checkpoint split")


def test_epoch_seeded_sampler_is_reproducible():
    from vision.data.sampling import EpochSeededSampler

    s = EpochSeededSampler(50, seed=7)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(4)
    b = list(s)
    s2 = EpochSeededSampler(50, seed=7)
    s2.set_epoch(3)
    assert a == list(s2) and a != b
    assert sorted(i for i, _ in a) == list(range(50))


# -- fetch from a URL with checksum verification (tested with a local file:// URL) ----------------
def test_fetch_verifies_archive_and_files(tmp_path):
    data = make_tiny_folder(tmp_path / "src" / "tinyset", per_class=2)
    sums = tmp_path / "cards" / "checksums"
    sums.mkdir(parents=True)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(data).as_posix()}"
             for p in sorted(data.rglob("*.png"))]
    (sums / "tinyset.sha256").write_text("\n".join(lines) + "\n")
    archive = tmp_path / "tinyset.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(data, arcname="tinyset")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    card_text = (f"name: tinyset\ntask: classification\nsource: test\nlicence: generated\nformat: class folders\n"
                 f"checksums: checksums/tinyset.sha256\n"
                 f"download: {{url: '{archive.as_uri()}', sha256: {digest}, strip_components: 1}}\n")
    (tmp_path / "cards" / "tinyset.yaml").write_text(card_text)
    card = cards.load_card("tinyset", tmp_path / "cards")
    out = cards.fetch(card, tmp_path / "fetched")
    assert len(ImageFolderSource(str(out)).load()) == 6
    with pytest.raises(FileExistsError):
        cards.fetch(card, tmp_path / "fetched")
    bad = dict(card, download={"url": archive.as_uri(), "sha256": "0" * 64})
    with pytest.raises(DataError, match="archive sha256"):
        cards.fetch(bad, tmp_path / "other")
    assert not (tmp_path / "other").exists()
