"""`scratchnst weights download` against a loopback HTTP server: the file appears only when complete
and checked; a wrong checksum, an interrupted transfer or a broken file leave the old file alone
and no partial file behind."""

import dataclasses
import errno
import hashlib
import http.server
import io
import os
import socket
import stat
import threading

import numpy as np
import pytest

from network_helpers import random_params, write_keras_weights
from scratchnst import weights
from scratchnst.cli import main
from scratchnst.errors import UsageError, UserError

SQUEEZENET_FILE = weights.KNOWN_WEIGHTS["squeezenet"].filename
VGG19_FILE = weights.KNOWN_WEIGHTS["vgg19"].filename


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.routes: {path: (body, how)}, how one of "ok", "close early", "no length", "redirect to itself",
    "503 without a reason"."""

    def do_GET(self):
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        body, how = self.server.routes[self.path]
        if how == "503 without a reason":
            self.send_response(503, "")
            self.end_headers()
            return
        if how == "redirect to itself":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()
            return
        self.send_response(200)
        if how != "no length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # HTTP/1.0: the server closes the connection after the response, so a short body is
        # what a client sees when a transfer breaks off.
        self.wfile.write(body if how == "ok" else body[:len(body) // 2])

    def log_message(self, *args):
        pass  # keep the test output clean


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve(server, path, body, how="ok"):
    """Publish body at path; returns its URL."""
    server.routes[path] = (body, how)
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture(scope="module")
def squeezenet_bytes(tmp_path_factory):
    """A valid SqueezeNet file (random weights) as bytes, about 3 MB."""
    path = tmp_path_factory.mktemp("served") / SQUEEZENET_FILE
    write_keras_weights(path, "squeezenet", random_params("squeezenet", np.random.default_rng(40)), style="squeezenet")
    return path.read_bytes()


def only_file(folder):
    """The one file in folder; fails if a temporary or partial file was left beside it."""
    files = list(folder.iterdir())
    assert len(files) == 1, files
    return files[0]


def test_download_saves_the_file_after_checking_it(server, squeezenet_bytes, tmp_path, capsys):
    url = serve(server, "/ok/squeezenet.h5", squeezenet_bytes)
    saved = weights.download("squeezenet", dest_dir=tmp_path / "new" / "folder", url=url, progress=True)
    assert saved == tmp_path / "new" / "folder" / SQUEEZENET_FILE
    assert only_file(saved.parent).read_bytes() == squeezenet_bytes
    err = capsys.readouterr().err
    assert "100%" in err and err.endswith("\n")  # the progress bar reached the end, and stays


def test_a_failed_download_wipes_its_progress_bar(server, squeezenet_bytes, tmp_path, capsys):
    """On a terminal the error's one line must not follow a half-drawn bar: the bar is erased."""
    url = serve(server, "/cut/squeezenet.h5", squeezenet_bytes, how="close early")
    with pytest.raises(UserError, match="interrupted"):
        weights.download("squeezenet", dest_dir=tmp_path, url=url, progress=True)
    err = capsys.readouterr().err
    assert "downloading [" in err and "\n" not in err
    assert err.endswith("\r") and err.rsplit("\r", 2)[-2].strip() == ""  # overwritten with blanks


def test_progress_bar_only_on_a_terminal(server, squeezenet_bytes, tmp_path, capsys):
    url = serve(server, "/ok/squeezenet.h5", squeezenet_bytes)
    weights.download("squeezenet", dest_dir=tmp_path, url=url)  # capsys' stderr is no terminal
    assert capsys.readouterr().err == ""


def test_download_goes_where_find_weights_looks(server, squeezenet_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))
    url = serve(server, "/ok/squeezenet.h5", squeezenet_bytes)
    saved = weights.download("squeezenet", url=url, progress=False)
    assert saved == weights.find_weights("squeezenet") == tmp_path / SQUEEZENET_FILE


@pytest.mark.parametrize("right_md5", [True, False])
def test_md5_is_checked_whatever_the_url(server, squeezenet_bytes, tmp_path, monkeypatch, right_md5):
    md5 = hashlib.md5(squeezenet_bytes).hexdigest() if right_md5 else "0" * 32
    known = dataclasses.replace(weights.KNOWN_WEIGHTS["squeezenet"], md5=md5)
    monkeypatch.setitem(weights.KNOWN_WEIGHTS, "squeezenet", known)
    url = serve(server, "/md5/squeezenet.h5", squeezenet_bytes)
    if right_md5:
        assert weights.download("squeezenet", dest_dir=tmp_path, url=url, progress=False).is_file()
    else:
        with pytest.raises(UserError, match="MD5"):
            weights.download("squeezenet", dest_dir=tmp_path, url=url, progress=False)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("old_file", [True, False])
def test_wrong_checksum_keeps_the_old_file_and_leaves_no_partial_file(server, tmp_path, old_file):
    if old_file:
        (tmp_path / VGG19_FILE).write_bytes(b"the previous download")
    url = serve(server, "/bad/vgg19.h5", b"not the VGG-19 weights" * 1000)
    with pytest.raises(UserError, match=r"MD5 .*expected 253f8cb515780f3b799900260a226db6") as error:
        weights.download("vgg19", dest_dir=tmp_path, url=url, progress=False)
    if old_file:
        assert only_file(tmp_path).read_bytes() == b"the previous download"
        assert f"{tmp_path / VGG19_FILE} is unchanged: run the command again" in str(error.value)
    else:
        assert list(tmp_path.iterdir()) == []
        assert "nothing was saved: run the command again" in str(error.value)


def test_a_local_file_with_the_wrong_checksum_asks_for_another_file(squeezenet_bytes, tmp_path):
    """Another network's file given as a local copy: running again cannot help, another file can."""
    local = tmp_path / "squeezenet.h5"
    local.write_bytes(squeezenet_bytes)
    with pytest.raises(UserError) as error:
        weights.download("vgg19", dest_dir=tmp_path / "dest", url=local.as_uri(), progress=False)
    message = str(error.value)
    assert f"the file at {local.as_uri()} has MD5" in message
    assert message.endswith(f"nothing was saved: give --url a copy of {VGG19_FILE}"), message


@pytest.mark.parametrize("old_file", [True, False])
def test_interrupted_transfer_leaves_no_partial_file(server, squeezenet_bytes, tmp_path, old_file):
    """The server promises Content-Length bytes and closes the connection halfway."""
    if old_file:
        (tmp_path / SQUEEZENET_FILE).write_bytes(b"the previous download")
    url = serve(server, "/cut/squeezenet.h5", squeezenet_bytes, how="close early")
    with pytest.raises(UserError, match=rf"interrupted: received {len(squeezenet_bytes) // 2:,} of "
                                        rf"{len(squeezenet_bytes):,} bytes"):
        weights.download("squeezenet", dest_dir=tmp_path, url=url)
    if old_file:
        assert only_file(tmp_path).read_bytes() == b"the previous download"
    else:
        assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_without_length_fails_the_structure_check(server, squeezenet_bytes, tmp_path):
    """Without Content-Length a cut transfer looks complete; the structure check catches it."""
    url = serve(server, "/nolength/squeezenet.h5", squeezenet_bytes, how="no length")
    with pytest.raises(UserError, match=rf"the file downloaded from {url}: is truncated \(1,5[\d,]+ of 3,0[\d,]+ bytes"
                                        r".*download it again with `scratchnst weights download squeezenet`"):
        weights.download("squeezenet", dest_dir=tmp_path, url=url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_file_of_the_wrong_structure_is_not_saved(server, tmp_path):
    params = random_params("squeezenet", np.random.default_rng(41))
    params["fire9/expand3x3"] = (np.zeros((3, 3, 64, 128), np.float32), np.zeros(128, np.float32))
    source = write_keras_weights(tmp_path / "served.h5", "squeezenet", params)
    url = serve(server, "/shape/squeezenet.h5", source.read_bytes())
    source.unlink()
    with pytest.raises(UserError, match=rf"downloaded from {url}: layer fire9/expand3x3 of squeezenet: kernel shape"):
        weights.download("squeezenet", dest_dir=tmp_path, url=url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_unreachable_server(server, tmp_path):
    with pytest.raises(UserError, match="HTTP 404"):
        weights.download("squeezenet", dest_dir=tmp_path, url=serve(server, "/x", b"") + "/missing", progress=False)
    with pytest.raises(UserError) as error:  # urllib's reason has three lines: the first only
        weights.download("squeezenet", dest_dir=tmp_path, url=serve(server, "/loop", b"", "redirect to itself"),
                         progress=False)
    assert "HTTP 302" in str(error.value) and "infinite loop" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"HTTP 503 Service Unavailable; check the address"):  # the standard phrase
        weights.download("squeezenet", dest_dir=tmp_path, url=serve(server, "/busy", b"", "503 without a reason"),
                         progress=False)
    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot download"):
        weights.download("squeezenet", dest_dir=tmp_path, url=f"http://127.0.0.1:{port}/w.h5", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def fetch_then_interrupt(url, out, md5, bar, timeout):
        out.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "_fetch", fetch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        weights.download("squeezenet", dest_dir=tmp_path, url="http://127.0.0.1:9/unused")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_and_unknown_name(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to"):
        weights.download("squeezenet", dest_dir=blocker / "sub", url="http://127.0.0.1:9/unused")
    with pytest.raises(UsageError, match="unknown network 'vgg16': choose one of vgg19, squeezenet"):
        weights.download("vgg16", dest_dir=tmp_path)


def test_cli_download(server, squeezenet_bytes, tmp_path, capsys):
    url = serve(server, "/cli/squeezenet.h5", squeezenet_bytes)
    assert main(["weights", "download", "squeezenet", "--url", url, "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"downloading squeezenet from {url} into {tmp_path}" in out
    assert f"saved {tmp_path / SQUEEZENET_FILE}" in out
    url = serve(server, "/cli/cut.h5", squeezenet_bytes, how="close early")
    assert main(["weights", "download", "squeezenet", "--url", url, "--dest", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scratchnst: error: download of ")  # one line, nothing else
    assert "interrupted" in err and "run the command again" in err
    assert list((tmp_path / "b").iterdir()) == []  # no partial or temporary file


def test_cli_download_errors_are_one_line(tmp_path, capsys):
    """An unknown name is wrong usage (2); a destination that cannot be made is a file problem (1)."""
    assert main(["weights", "download", "alexnet", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown network 'alexnet': choose one of vgg19, squeezenet" in err
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    assert main(["weights", "download", "squeezenet", "--url", "http://127.0.0.1:9/unused",
                 "--dest", str(blocker / "sub")]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "choose another folder with --dest DIR" in captured.err
    assert "Traceback" not in captured.err


# ------------------------------------------------------- the destination, checked before downloading
def cli_line(capsys, argv):
    """main(argv) -> (exit status, stdout, the one line on stderr); fails unless stderr is one line."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return status, captured.out, lines[0]


@pytest.fixture
def no_download(monkeypatch):
    """A download that fails the test if it starts: every problem here is found before."""
    def fetch(url, *args):
        raise AssertionError(f"{url} was fetched")

    monkeypatch.setattr(weights, "_fetch", fetch)


def _occupy(kind, dest):
    """Put something that is not a regular file under the known file name in dest."""
    final = dest / SQUEEZENET_FILE
    if kind == "a folder":
        final.mkdir()
    elif kind == "a pipe":
        os.mkfifo(final)
    elif kind == "a link to a pipe":
        os.mkfifo(dest.parent / "pipe")
        final.symlink_to(dest.parent / "pipe")
    elif kind == "a link loop":
        final.symlink_to(SQUEEZENET_FILE)
    elif kind == "a link into a missing folder":
        final.symlink_to(dest.parent / "missing" / "w.h5")
    else:
        raise ValueError(kind)
    return final


OCCUPIED = {
    "a folder": ["it is a folder; remove it or choose another folder with --dest DIR"],
    "a pipe": ["it is not a regular file (a device or a pipe); remove it or choose another folder with --dest DIR"],
    "a link to a pipe": ["it is not a regular file (a device or a pipe); remove it"],
    "a link loop": ["Too many levels of symbolic links; remove it or choose another folder with --dest DIR"],
    "a link into a missing folder": ["it is a link to", "but folder", "missing does not exist; choose another "
                                     "folder with --dest DIR"],
}


@pytest.mark.parametrize("kind", list(OCCUPIED))
def test_download_onto_something_that_is_not_a_file_is_refused_before_downloading(kind, tmp_path, no_download,
                                                                                 capsys):
    dest = tmp_path / "dest"
    dest.mkdir()
    final = _occupy(kind, dest)
    status, out, line = cli_line(capsys, ["weights", "download", "squeezenet", "--url", "http://127.0.0.1:9/w.h5",
                                          "--dest", dest])
    assert status == 1 and out == ""
    assert f"cannot save {final}: " in line
    for words in OCCUPIED[kind]:
        assert words in line
    assert ".tmp" not in line
    assert os.path.lexists(final) and sorted(os.listdir(dest)) == [SQUEEZENET_FILE]  # left as it was
    assert kind not in ("a pipe", "a link to a pipe") or stat.S_ISFIFO(os.stat(final).st_mode)


def test_download_through_a_link_replaces_the_file_it_points_to(server, squeezenet_bytes, tmp_path, capsys):
    """As everywhere in scratchnst (atomic_path): a link is followed, the link itself stays."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shared.h5").write_bytes(b"the old weights")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / SQUEEZENET_FILE).symlink_to(elsewhere / "shared.h5")
    url = serve(server, "/link/squeezenet.h5", squeezenet_bytes)
    assert main(["weights", "download", "squeezenet", "--url", url, "--dest", str(dest)]) == 0
    capsys.readouterr()
    assert os.readlink(dest / SQUEEZENET_FILE) == str(elsewhere / "shared.h5")
    assert (elsewhere / "shared.h5").read_bytes() == squeezenet_bytes
    assert sorted(os.listdir(elsewhere)) == ["shared.h5"] and sorted(os.listdir(dest)) == [SQUEEZENET_FILE]


@pytest.mark.parametrize("kind", ["a file", "under a file", "not writable"])
def test_download_destination_folder_problems_are_one_line_before_downloading(kind, tmp_path, no_download, request,
                                                                              capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    if kind == "not writable":
        dest = request.getfixturevalue("unwritable_folder")
        words = [f"cannot save {dest / SQUEEZENET_FILE}: ", f"folder {dest} is not writable (",
                 "; choose another folder with --dest"]
    else:
        dest = blocker if kind == "a file" else blocker / "sub"
        words = [f"cannot write to {dest}: {blocker} is a file, not a folder; choose another folder with --dest DIR"]
    status, out, line = cli_line(capsys, ["weights", "download", "squeezenet", "--url", "http://127.0.0.1:9/w.h5",
                                          "--dest", dest])
    assert status == 1 and out == ""
    for word in words:
        assert word in line
    assert sorted(os.listdir(tmp_path)) == ["a file"] and blocker.read_text() == "not a folder"


def test_download_onto_a_full_disk_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        real_open(path, mode, *args, **kwargs).close()  # the temporary file exists, as on a real disk
        return FullDisk()

    monkeypatch.setattr(weights, "open", open_on_a_full_disk, raising=False)
    source = tmp_path / "mirror" / "w.h5"
    source.parent.mkdir()
    source.write_bytes(b"weights" * 1000)
    dest = tmp_path / "dest"
    status, out, line = cli_line(capsys, ["weights", "download", "squeezenet", "--url", source.as_uri(),
                                          "--dest", dest])
    assert status == 1
    assert line == (f"scratchnst: error: cannot save {dest / SQUEEZENET_FILE}: No space left on device; "
                    "free some space or choose another folder with --dest DIR")
    assert list(dest.iterdir()) == []  # the temporary file is gone
