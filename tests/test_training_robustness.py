"""Tests of scratchnst.training against what a red team tried: file names that are not UTF-8, very
elongated photos and a --size too large to decode, an --iters no checkpoint could hold, hand-edited
checkpoints with the wrong dtypes, and a network whose weights overflow float32."""

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from scratchnst import checkpoint, cli, settings, training, transformer_net
from scratchnst.cli import parser
from scratchnst.errors import UsageError, UserError

from test_training import SWIRLS, TINY, write_photo

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "lessons" / "images" / "photos").glob("*.jpg"))


def one_line(capsys):
    """The last line of stderr, after checking there is no traceback."""
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err
    return err.splitlines()[-1]


def non_utf8(folder, name):
    """folder / name (bytes that are not valid UTF-8), or a skip where the file system refuses such names."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    try:
        path.write_bytes(b"")
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 file names")
    path.unlink()
    return path


# ------------------------------------------------------------------------------- 1. file names
def test_the_photo_digest_takes_any_file_name_and_keeps_the_old_one_for_utf8_names(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "sub/été.png"):
        write_photo(folder / name, 40, 40)
    photos = training.list_photos(folder)
    # the digest before non-UTF-8 names were handled: checkpoints written then must still resume
    before = hashlib.sha256("a.jpg\nsub/été.png".encode("utf8")).hexdigest()
    assert training.photo_list_digest(photos, folder) == before
    digests = set()
    for name in (b"caf\xe9.jpg", b"caf\xe8.jpg"):   # two names that were the same "?" would collide
        path = non_utf8(folder, name)
        write_photo(path, 40, 40)
        digest = training.photo_list_digest(training.list_photos(folder), folder)
        assert digest == training.photo_list_digest(training.list_photos(folder), folder)   # run after run
        digests.add(digest)
        path.unlink()
    assert len(digests) == 2 and before not in digests


def test_non_utf8_style_and_photo_names_train_save_and_resume(tmp_path, squeezenet_weights_path):
    """Training ended in an internal error (UnicodeEncodeError) and lost the run: the digest, then the
    network file's style attribute, could not hold such a name."""
    folder = tmp_path / "photos"
    write_photo(folder / "a.png", 40, 56, seed=1)
    write_photo(non_utf8(folder, b"caf\xe9.png"), 48, 40, seed=2)
    style = non_utf8(tmp_path, b"style-\xe9.jpg")
    style.write_bytes(SWIRLS.read_bytes())
    ckpt = tmp_path / "run.npz"
    run = dict(weights=str(squeezenet_weights_path), seed=4, **TINY)
    result = training.train(style, folder, iters=2, checkpoint_path=ckpt, **run)
    transformer_net.save(tmp_path / "net.h5", result.params, result.meta)
    _, meta = transformer_net.load(tmp_path / "net.h5")
    assert meta["style"] == str(tmp_path / "style-\\xe9.jpg") and meta["iterations"] == 2
    resumed = training.train(style, folder, iters=3, resume=checkpoint.load(ckpt), **run)
    assert len(resumed.history) == 3


def test_the_command_shows_a_non_utf8_name_escaped_on_a_strict_terminal(tmp_path, squeezenet_weights_path):
    """A UTF-8 terminal refuses a name's stray byte: printed as it was, the settings' first line ended
    the command ("cannot write to standard output") before it trained."""
    import subprocess
    import sys
    folder = tmp_path / "photos"
    write_photo(folder / "a.png", 40, 56, seed=1)
    style = non_utf8(tmp_path, b"style-\xe9.jpg")
    style.write_bytes(SWIRLS.read_bytes())
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", SCRATCHNST_WEIGHTS_DIR=str(squeezenet_weights_path.parent))
    done = subprocess.run([sys.executable, "-m", "scratchnst", "train", os.fsencode(style), str(folder), "-o",
                           str(tmp_path / "net.h5"), "--size", "32", "--iters", "2"],
                          capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"style-\\xe9.jpg" in done.stdout
    assert (tmp_path / "net.h5").is_file()


# ---------------------------------------------------------------------------- 2. elongated photos
def test_very_elongated_photos_are_skipped_and_panoramas_used(tmp_path):
    """A 10 x 1000 strip was enlarged to 32 x 3200 (a 4 x 100000 one to 64 x 1,600,000 at --size 64)."""
    folder = tmp_path / "photos"
    write_photo(folder / "strip.png", 10, 1000, seed=1)       # 100:1
    write_photo(folder / "panorama.png", 40, 160, seed=2)     # 4:1
    write_photo(folder / "tall.png", 240, 30, seed=3)         # 8:1, the most that is used
    photos = training.list_photos(folder)
    batches = training.PhotoBatches(photos, 32, 1, np.random.default_rng(0), folder=folder)
    for _ in range(12):
        assert batches.next_batch().shape == (1, 32, 32, 3)
    assert batches.skipped == 1 and batches.bad == {photos.index(folder / "strip.png")}
    assert "strip.png is 1000x10 px, more than 8 times as long as it is wide" in batches.first_error
    assert max(p.shape[0] * p.shape[1] for p in batches._cache.values()) <= 32 * 256
    only_strips = training.PhotoBatches([folder / "strip.png"], 32, 1, np.random.default_rng(0), folder=folder)
    with pytest.raises(UserError, match="none of the 1 photos .* too elongated") as info:
        only_strips.next_batch()
    assert "\n" not in str(info.value)


def test_the_memory_check_counts_the_photos_decoded_at_size(squeezenet_weights_path, monkeypatch):
    """--size 20000 with small crops passed the check of the step, then decoded photos at 23000 px."""
    monkeypatch.setattr(settings, "available_memory", lambda: 4e9)
    resolve = lambda **o: training.resolve_train_settings(weights=str(squeezenet_weights_path), batch=1, **o)  # noqa
    training.check_train_memory(resolve(), SWIRLS)   # the defaults fit
    training.check_train_memory(resolve(size=1024, crop=64, final_steps=0, style_size=64, iters=1), SWIRLS)
    with pytest.raises(UsageError) as info:
        training.check_train_memory(resolve(size=20000, crop=64, final_steps=0, style_size=64, iters=1), SWIRLS)
    message = str(info.value)
    assert message.startswith("--size 20000 decodes each training photo at a short side of 23000 px") and \
        "4.0 GB available; use --size" in message and "\n" not in message
    fits = int(message.split("use --size ")[1].split()[0])
    training.check_train_memory(resolve(size=fits, crop=64, final_steps=0, style_size=64, iters=1), SWIRLS)


# ------------------------------------------------------------------------------------ 3. --iters
def test_iters_is_bounded_where_the_other_settings_are(squeezenet_weights_path):
    resolve = lambda **o: training.resolve_train_settings(weights=str(squeezenet_weights_path), **o)  # noqa
    assert resolve(iters=10**9)["iters"] == 10**9 == training.MAX_ITERS
    for iters in (10**9 + 1, 2**64 + 1):
        with pytest.raises(UsageError, match=r"--iters must be an integer from 1 to 1,000,000,000 \(10\*\*9\)"):
            resolve(iters=iters)


def test_iters_above_the_bound_is_one_line_on_the_command_line(tmp_path, capsys):
    """Above 2**64 a stop ended in an internal error (no HDF5 integer holds it) and nothing was saved."""
    argv = ["train", str(SWIRLS), str(tmp_path), "-o", str(tmp_path / "net.h5"), "--iters"]
    with pytest.raises(SystemExit) as info:
        cli.main(argv + [str(2**64 + 1)])
    assert info.value.code == 2
    assert "argument --iters: '18446744073709551617': give an integer from 1 to 10**9" in one_line(capsys)
    with pytest.raises(SystemExit):
        cli.main(argv + ["many"])
    assert "argument --iters: invalid int value: 'many'" in one_line(capsys)
    assert not (tmp_path / "net.h5").exists()
    assert parser.MAX_ITERS == training.MAX_ITERS   # written out there: NumPy must not load before --threads


# ---------------------------------------------------------------------- 4. hand-edited checkpoints
@pytest.mark.parametrize("edit", ["gamma int32", "gamma bool", "gamma float64", "gamma complex", "gamma strings",
                                  "adam_m int64", "order 2-D", "order floats"])
def test_a_checkpoint_of_the_wrong_dtypes_is_damaged_at_resume(tmp_path, squeezenet_weights_path, edit):
    """These passed the checks, then failed after a step with an internal error, that step's network unsaved."""
    folder = tmp_path / "photos"
    write_photo(folder / "a.png", 40, 56, seed=1)
    write_photo(folder / "b.png", 48, 40, seed=2)
    ckpt = tmp_path / "run.npz"
    run = dict(weights=str(squeezenet_weights_path), seed=4, **TINY)
    training.train(SWIRLS, folder, iters=2, checkpoint_path=ckpt, **run)
    state = checkpoint.load(ckpt)
    state = {**state, "params": dict(state["params"]), "adam_m": dict(state["adam_m"]),
             "batches": dict(state["batches"])}
    gamma = state["params"]["conv1:gamma"]
    part, kind = edit.split(" ")
    if part == "gamma":
        state["params"]["conv1:gamma"] = np.full(gamma.shape, "1") if kind == "strings" else \
            gamma.astype({"int32": np.int32, "bool": bool, "float64": np.float64, "complex": np.complex64}[kind])
    elif part == "adam_m":
        state["adam_m"]["conv1:gamma"] = np.zeros(gamma.shape, np.int64)
    elif kind == "2-D":
        state["batches"]["order"] = np.array([[0, 1]])
    else:
        state["batches"]["order"] = np.array([0.5, 1.0])
    with pytest.raises(UserError, match=r"^the checkpoint is damaged or not from this version of scratchnst \(") \
            as info:
        training.train(SWIRLS, folder, iters=3, resume=state, **run)
    assert "\n" not in str(info.value)
    training.train(SWIRLS, folder, iters=3, resume=checkpoint.load(ckpt), **run)   # the file as written resumes


# ------------------------------------------------------------------------------ 5. huge weights
def huge_network():
    params = transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0)
    params["conv1/kernel"][...] = 3e38   # finite, but the first convolution's sums overflow float32
    return params


def test_a_network_whose_output_overflows_is_one_line_without_warnings():
    """It painted an all-black picture, exit 0, with NumPy's RuntimeWarnings."""
    photo = np.random.default_rng(1).uniform(0, 255, (24, 20, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a NumPy RuntimeWarning fails the test
        with pytest.raises(UserError, match=r"^the network's output is not finite: .* retrain it, or use another "
                                            r"network$"):
            training.stylize_photo(huge_network(), {"preprocessing": "caffe"}, photo)


def test_apply_with_a_network_whose_output_overflows_writes_nothing(tmp_path, capsys):
    network = transformer_net.save(tmp_path / "net.h5", huge_network(), {"preprocessing": "caffe"})
    out = tmp_path / "painted.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["apply", str(network), str(PHOTOS[0]), "-o", str(out), "--size", "64"]) == 1
    assert "the network's output is not finite" in one_line(capsys) and not out.exists()
