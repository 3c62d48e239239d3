"""The source studies' helpers: the FER2013 csv loader (every kind of malformed row), the survey's
cost measurement (parameter and FLOP counts against independently published counts, peak memory,
latency fields), the CNN of the CNN-vs-ViT study with a local checkpoint, the stream timer, and the
quoted-numbers table."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from survey_lib import cost, zoo
from survey_lib.data import disk
from survey_lib.models import resnet
from survey_lib.viz import survey as survey_viz
from survey_lib.data import FER2013, FER2013_CLASSES, DatasetNotFoundError

N_PIX = 48 * 48


def _pixels(seed: int) -> str:
    return " ".join(str(v) for v in (np.arange(N_PIX) + seed) % 256)


def _write_csv(path: Path, rows, header=("emotion", "pixels", "Usage")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


GOOD_ROWS = [
    (0, _pixels(0), "Training"),
    (3, _pixels(1), "Training"),
    (6, _pixels(2), "Training"),
    (1, _pixels(3), "PublicTest"),
    (5, _pixels(4), "PrivateTest"),
    (2, _pixels(5), "PrivateTest"),
]


# ---------------------------------------------------------------------------------------------
# FER2013
# ---------------------------------------------------------------------------------------------
def test_fer2013_classes_follow_the_csv_label_order():
    assert FER2013_CLASSES == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


def test_fer2013_reads_splits_labels_and_row_major_pixels(tmp_path):
    path = _write_csv(tmp_path / "fer2013.csv", GOOD_ROWS)
    train, val, test = (FER2013(path, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    assert train.targets.tolist() == [0, 3, 6] and val.targets.tolist() == [1] and test.targets.tolist() == [5, 2]
    img, label = train[1]
    assert img.shape == (1, 48, 48) and img.dtype == torch.float32 and label == 3
    # row 2 holds (k + 1) % 256 at position k: row-major means (0, 1) is k=1 and (1, 0) is k=48
    assert img[0, 0, 0] == pytest.approx(1 / 255) and img[0, 0, 1] == pytest.approx(2 / 255)
    assert img[0, 1, 0] == pytest.approx(49 / 255)
    flipped = FER2013(path, "train", transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[1][0], img.flip(-1))


def test_fer2013_accepts_spaces_in_header_and_a_trailing_blank_line(tmp_path):
    # columns in another order, with the leading spaces of some re-exported versions of the csv
    path = _write_csv(tmp_path / "f.csv", [(e, u, p) for e, p, u in GOOD_ROWS], header=("emotion", " Usage", " pixels"))
    with open(path, "a") as f:
        f.write("\n")
    assert len(FER2013(path, "train")) == 3


BAD_ROWS = {
    "too few pixels": ((0, " ".join(["1"] * (N_PIX - 1)), "Training"), "expected 2304 pixel values"),
    "too many pixels": ((0, " ".join(["1"] * (N_PIX + 1)), "Training"), "expected 2304 pixel values"),
    "non-integer pixel": ((0, "1.5 " + " ".join(["1"] * (N_PIX - 1)), "Training"), "'1.5' is not an integer"),
    "text pixel": ((0, " ".join(["1"] * 10) + " abc " + " ".join(["1"] * (N_PIX - 11)), "Training"),
                   "'abc' is not an integer"),
    "pixel above 255": ((0, "256 " + " ".join(["1"] * (N_PIX - 1)), "Training"), "0..255"),
    "negative pixel": ((0, "-1 " + " ".join(["1"] * (N_PIX - 1)), "Training"), "0..255"),
    "label 7": ((7, _pixels(0), "Training"), "emotion '7' is not an integer label in 0..6"),
    "label -1": ((-1, _pixels(0), "Training"), "emotion '-1'"),
    "non-integer label": (("happy", _pixels(0), "Training"), "emotion 'happy'"),
    "unknown usage": ((0, _pixels(0), "Validation"), "unknown Usage 'Validation'"),
    "missing field": ((0, _pixels(0)), "expected 3 fields"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_fer2013_malformed_row_raises_with_its_line_number(tmp_path, kind):
    row, message = BAD_ROWS[kind]
    rows = GOOD_ROWS[:2] + [row] + GOOD_ROWS[2:]  # header is line 1, so the bad row is line 4
    path = _write_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(ValueError, match="line 4") as err:
        FER2013(path, "test")  # a bad Training row fails every split: nothing is silently dropped
    assert message in str(err.value)


def test_fer2013_missing_column_and_empty_file(tmp_path):
    path = _write_csv(tmp_path / "a.csv", [(0, _pixels(0))], header=("emotion", "pixels"))
    with pytest.raises(ValueError, match=r"line 1: .*lacks column\(s\) \['Usage'\]"):
        FER2013(path)
    empty = tmp_path / "b.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        FER2013(empty)
    header_only = _write_csv(tmp_path / "c.csv", [])
    with pytest.raises(ValueError, match="no image rows"):
        FER2013(header_only)


def test_fer2013_missing_file_names_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_DATA_ROOT", str(tmp_path / "root"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "root" / "fer2013" / "fer2013.csv")):
        FER2013()
    with pytest.raises(DatasetNotFoundError, match="elsewhere.csv"):
        FER2013(tmp_path / "elsewhere.csv")
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_fer2013_unknown_split(tmp_path):
    path = _write_csv(tmp_path / "fer2013.csv", GOOD_ROWS)
    with pytest.raises(ValueError, match="unknown split 'validation'.*'test', 'train', 'val'"):
        FER2013(path, "validation")


# ---------------------------------------------------------------------------------------------
# parameters and FLOPs against independently published counts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, gmacs", [
    ("vit_base_patch16_224", 86_567_656, 17.56),          # torchvision vit_b_16: 86,567,656 params, 17.56 GFLOPS
    ("swin_base_patch4_window7_224", 87_768_224, 15.43),  # torchvision swin_b: 87,768,224 params, 15.43 GFLOPS
])
def test_meta_cost_matches_published_counts(name, params, gmacs):
    c = cost.meta_cost(name)
    assert c["params"] == params
    assert c["flops"] == pytest.approx(2e9 * c["gmacs"])
    assert c["gmacs"] == pytest.approx(gmacs, rel=0.01)  # torchvision's "GFLOPS" count multiply-adds


def test_measured_parameters_equal_timms_own_count():
    import timm

    row = cost.measure_model("deit_tiny_patch16_224", img_size=32, warmup=0, repeats=1, memory=False)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32)
    assert row["params"] == sum(p.numel() for p in ref.parameters())
    # the 224 px model of the same name is the published 5,717,416 (DeiT-Ti); at 32 px only pos_embed shrinks
    assert row["params"] == 5_717_416 - (196 - 4) * 192
    # FLOPs on real CPU tensors (fused attention) equal the meta-device count and a hand count
    n, d, blocks = 5, 192, 12  # 4 patches + CLS, width, depth
    hand = blocks * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d) + 4 * d * 16 * 16 * 3 + d * 1000
    assert row["flops"] == cost.meta_cost("deit_tiny_patch16_224", img_size=32)["flops"] == 2 * hand


def test_measure_model_returns_sane_fields():
    torch.manual_seed(0)
    model = resnet.build_resnet(num_classes=10, in_chans=3)
    row = cost.measure_model(model, img_size=32, warmup=1, repeats=5, num_threads=1)
    for key in ("params", "flops", "gmacs", "median_ms", "p90_ms", "threads", "peak_mb", "activations_peak_mb"):
        assert np.isfinite(row[key]), key
    assert row["threads"] == 1 and torch.get_num_threads() == 1
    assert 0 < row["median_ms"] <= row["p90_ms"]
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["peak_mb"] > row["activations_peak_mb"] > 0
    # without the max-pool the stem's 64 maps stay at 16 x 16: at least one such tensor is live
    assert row["activations_peak_mb"] * 2**20 >= 64 * 16 * 16 * 4


class _ClassTokenNet(nn.Module):
    """CaiT's pattern: a view of a parameter (the expanded class token) enters a submodule."""

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.blk = nn.Linear(4, 4)

    def forward(self, x):
        return self.blk(self.cls_token.expand(x.shape[0], -1, -1)).flatten(1) + x.mean()


def test_flop_count_of_a_class_token_view_under_no_grad():
    # plain FlopCounterMode under no_grad fails here ("Expected gradient function to be set"),
    # which is why cait_* failed; measure_model counts with the parameters frozen
    row = cost.measure_model(_ClassTokenNet(), img_size=4, in_chans=1, warmup=0, repeats=1, memory=False)
    assert row["flops"] == 2 * 4 * 4  # one token through a 4 x 4 linear layer


def test_peak_memory_sees_the_largest_live_activations():
    model = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10))
    out = cost.forward_peak_memory(model, (64, 100))
    hidden = 64 * 1000 * 4  # one (64, 1000) float32 tensor
    assert hidden <= out["activations_peak_mb"] * 2**20 <= 4 * hidden
    assert out["params_mb"] * 2**20 == pytest.approx(sum(p.numel() * 4 for p in model.parameters()))


def test_forward_peak_memory_agrees_with_the_operator_level_tracker():
    from survey_lib.cost import peak_memory as tensor_peak

    mlp = nn.Sequential(nn.Linear(100, 1000), nn.ReLU(), nn.Linear(1000, 10)).eval()
    x = torch.zeros(64, 100)
    with torch.no_grad():
        assert cost.forward_peak_memory(mlp, x)["activations_peak_mb"] * 2**20 == tensor_peak(lambda: mlp(x))
    cnn = resnet.build_resnet(num_classes=10, in_chans=1).eval()
    x = torch.zeros(8, 1, 32, 32)
    with torch.no_grad():
        # the allocator also sees convolution scratch buffers that never become tensors
        assert cost.forward_peak_memory(cnn, x)["activations_peak_mb"] * 2**20 >= tensor_peak(lambda: cnn(x))


def test_environment_reports_what_the_timings_ran_on():
    import timm

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        env = cost.environment()
        assert env["torch_threads"] == 1  # the thread count at the time of the call, not a default
    finally:
        torch.set_num_threads(old)
    assert env["torch"] == torch.__version__ and env["timm"] == timm.__version__ and env["device"] == "cpu"
    assert env["cpu"] and 1 <= env["usable_cpus"] <= env["logical_cpus"]
    assert env["cuda"] == torch.cuda.is_available()
    text = cost.format_environment(env)
    assert len(text.splitlines()) == len(env) and "torch_threads" in text and torch.__version__ in text


def test_latency_fields_from_evaluate():
    from survey_lib.cost import latency

    lat = latency(nn.Linear(8, 8), (1, 8), warmup=1, repeats=7, num_threads=1)
    assert set(lat) >= {"median_ms", "p90_ms", "mean_ms", "threads"}
    assert 0 < lat["median_ms"] <= lat["p90_ms"] and lat["threads"] == 1


# ---------------------------------------------------------------------------------------------
# the CNN and its local checkpoint
# ---------------------------------------------------------------------------------------------
def test_small_resnet_shapes_and_size():
    model = resnet.build_resnet(num_classes=7, in_chans=1)
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    assert 250_000 < sum(p.numel() for p in model.parameters()) < 400_000
    with pytest.raises(ValueError, match="no pretrained weights"):
        resnet.build_resnet(7, checkpoint="x.pth")


def test_resnet_fine_tunes_from_a_local_checkpoint(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)  # stands in for ImageNet weights
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = resnet.build_resnet(num_classes=7, in_chans=1, arch="resnet18", checkpoint=path)
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))  # RGB summed to grey
    assert torch.equal(model.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert model.fc.out_features == 7 and not torch.equal(model.fc.weight[:7], source.fc.weight[:7])
    info = resnet.load_backbone_checkpoint(model, path)
    assert info["adapted"] == ["conv1.weight"] and set(info["skipped"]) == {"fc.weight", "fc.bias"}

    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resnet.build_resnet(7, arch="resnet18", checkpoint=tmp_path / "absent.pth")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of its 1 tensors match"):
        resnet.load_backbone_checkpoint(model, tmp_path / "other.pth")


# ---------------------------------------------------------------------------------------------
# stream timing
# ---------------------------------------------------------------------------------------------
def test_stream_latency_times_every_frame_after_warmup():
    model = resnet.build_resnet(num_classes=2, in_chans=1)
    frames = [torch.rand(1, 32, 32) for _ in range(8)]
    out = cost.stream_latency(model, frames, warmup=3, num_threads=1)
    assert len(out["ms"]) == 5 and len(out["predictions"]) == 5
    assert out["fps"] == pytest.approx(1000 * 5 / out["ms"].sum())
    assert out["median_ms"] <= out["p90_ms"] <= out["p99_ms"] and out["threads"] == 1
    with pytest.raises(ValueError, match="no frame after 3 warm-up frames"):
        cost.stream_latency(model, frames[:3], warmup=3)


def test_read_video_frames_from_a_gif(tmp_path):
    import imageio.v3 as iio

    video = (np.random.default_rng(0).random((4, 20, 24, 3)) * 255).astype(np.uint8)
    path = tmp_path / "clip.gif"
    iio.imwrite(path, video, loop=0)
    frames = list(disk.read_video_frames(path))
    assert len(frames) == 4 and frames[0].shape == (3, 20, 24) and 0 <= frames[0].min() <= frames[0].max() <= 1
    assert len(list(disk.read_video_frames(path, max_frames=2))) == 2
    with pytest.raises(FileNotFoundError, match="no video at"):
        list(disk.read_video_frames(tmp_path / "absent.mp4"))


# ---------------------------------------------------------------------------------------------
# the variants and the quoted numbers
# ---------------------------------------------------------------------------------------------
def test_every_listed_timm_model_exists_and_parents_are_known():
    import timm

    names = set(timm.list_models())
    keys = {v.key for v in zoo.VARIANTS}
    for v in zoo.VARIANTS:
        assert set(v.timm_models) <= names, v.key
        assert v.parent is None or v.parent in keys, v.key
        assert v.axis in zoo.AXES and 2015 < v.date < 2026
    assert set(zoo.SURVEY_MODELS_SMOKE) <= names and set(zoo.SURVEY_MODELS_CPU) <= names


def test_published_table_flags_the_swin_mixup():
    quotes = [q for q in zoo.PUBLISHED_TOP1 if q.model in ("Swin-B", "Swin-L, 384 px")]
    df = zoo.published_table(quotes).set_index("model")
    assert df.loc["Swin-B", "params_m"] == pytest.approx(87.77, abs=0.01)
    assert df.loc["Swin-L, 384 px", "params_m"] == pytest.approx(196.7, abs=0.1)
    # the review's "87.3%, ~88M" cannot both hold: 87.3% belongs to Swin-L, which has 197M parameters
    assert not df.loc["Swin-B", "params_flag"] and df.loc["Swin-L, 384 px", "params_flag"]
    assert df["discrepancy"].all() and df.loc["Swin-B", "top1"] == 83.5
    assert all(q.explanation and q.source for q in zoo.PUBLISHED_TOP1)


def test_family_tree_figure():
    from matplotlib.figure import Figure

    fig = survey_viz.plot_family_tree()
    assert isinstance(fig, Figure)
