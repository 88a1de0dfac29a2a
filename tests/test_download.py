"""Model distribution through a real S3-compatible server on loopback (moto server mode) and boto3."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from berg import fetch as dl
from berg.cards import Source
from berg.errors import OfflineError
from berg.storage.manifest import MANIFEST
from berg.storage.native import load_arrays, native_complete, projection_path, readout_path
from _berg_producer import write_berg_tree
from _support import BUCKET, REPO, free_port, s3_client, tiny_card, upload_tree

SUBJECT_FILES = ["encoding_models_weights/pca_weights.npy", "encoding_models_weights/weights_sub-01.npy",
                 "metadata/metadata_sub-01.npy"]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def bucket(s3_server, tmp_path_factory):
    """The tiny model's files in BERG's key layout, plus a multipart object."""
    card = tiny_card()
    src = tmp_path_factory.mktemp("bucket")
    files = write_berg_tree(src, card, [1, 2], tmp_path_factory.mktemp("bmd"))
    client = s3_client(s3_server)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    upload_tree(client, src, card.data["sources"][0]["prefix"])
    big = np.random.default_rng(3).bytes(11 * 1024 * 1024)
    client.put_object(Bucket=BUCKET, Key="tests/small.bin", Body=b"x" * 1000, ACL="public-read")
    upload = client.create_multipart_upload(Bucket=BUCKET, Key="tests/multipart.bin", ACL="public-read")
    parts = []
    for i, start in enumerate(range(0, len(big), 5 * 1024 * 1024), 1):
        etag = client.upload_part(Bucket=BUCKET, Key="tests/multipart.bin", PartNumber=i, UploadId=upload["UploadId"],
                                  Body=big[start:start + 5 * 1024 * 1024])["ETag"]
        parts.append({"PartNumber": i, "ETag": etag})
    client.complete_multipart_upload(Bucket=BUCKET, Key="tests/multipart.bin", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    return {"card": card, "src": src, "files": files, "endpoint": s3_server, "big": big}


@pytest.fixture()
def get_ranges(monkeypatch):
    """Record (key, Range) of every GetObject the download code sends."""
    ranges = []
    init = dl._S3Source.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.client.meta.events.register("provide-client-params.s3.GetObject",
                                         lambda params, **_: ranges.append((params["Key"], params.get("Range"))))

    monkeypatch.setattr(dl._S3Source, "__init__", recording_init)
    return ranges


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_convert_and_read_back(bucket, tmp_path, monkeypatch, get_ranges):
    monkeypatch.setattr(dl, "PART_SIZE", 4096)  # several ranged parts per file
    card = bucket["card"]
    paths = dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    model_dir = tmp_path / card.folder
    assert paths == [model_dir / rel for rel in SUBJECT_FILES]
    assert not (model_dir / "encoding_models_weights" / "weights_sub-02.npy").exists()  # only what subject 1 needs
    for rel in SUBJECT_FILES:
        assert _sha(model_dir / rel) == _sha(bucket["src"] / rel)
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert {manifest[r]["sha256"] for r in SUBJECT_FILES} == {_sha(model_dir / r) for r in SUBJECT_FILES}
    assert all(manifest[r]["verified"] == "size+etag" for r in SUBJECT_FILES)
    assert len(get_ranges) > len(SUBJECT_FILES)
    dl.ensure_model_files(card, tmp_path, 1)
    assert native_complete(model_dir, card, 1)
    legacy = bucket["files"]
    proj, readout = load_arrays(projection_path(model_dir)), load_arrays(readout_path(model_dir, 1))
    shapes = card.data["backbone"]["feature_shapes"]
    feats = [np.random.default_rng(i).normal(size=(3, int(np.prod(shapes[n])))) for i, n in
             enumerate(card.data["backbone"]["return_nodes"])]
    flat = np.concatenate(feats, axis=1)
    sc, svd = legacy[SUBJECT_FILES[0]]["scaler_param"], legacy[SUBJECT_FILES[0]]["pca_param"]
    w = legacy[SUBJECT_FILES[1]]
    expected = (((flat - sc["mean_"]) / sc["scale_"]) @ svd["components_"].T) @ w["coef_"].T + w["intercept_"]
    z = sum(f.astype(np.float32) @ proj[f"weight.{n}"].T for f, n in zip(feats, card.data["backbone"]["return_nodes"]))
    got = (z + proj["bias"]) @ readout["weight"].T + readout["bias"]
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-5


def _listening_socket():
    """A loopback socket that accepts nothing by itself: any connection attempt queues and can be seen."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


def _was_touched(sock):
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_offline_with_files_present_makes_no_network_call(bucket, tmp_path, monkeypatch):
    card = bucket["card"]
    dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    sock = _listening_socket()
    monkeypatch.setenv("BERG_S3_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    monkeypatch.setenv("BERG_OFFLINE", "1")
    try:
        dl.ensure_model_files(card, tmp_path, 1)  # converts from the legacy files on disk
        dl.ensure_model_files(card, tmp_path, 1)  # native files complete
        dl.download(card, subjects=[1], berg_dir=tmp_path, show_progress=False)  # all intact: nothing to fetch
        assert native_complete(tmp_path / card.folder, card, 1)
        with pytest.raises(OfflineError) as info:
            dl.ensure_model_files(card, tmp_path, 2)
        assert "weights_sub-02.npy" in str(info.value) and "metadata_sub-02.npy" in str(info.value)
        assert "berg download" in str(info.value)
        assert not _was_touched(sock)
        socket.create_connection(sock.getsockname(), timeout=5).close()  # the detector does see a connection
        assert _was_touched(sock)
    finally:
        sock.close()


def test_four_processes_end_with_one_verified_copy(bucket, tmp_path):
    # The package root is stood in for so that each process imports only the distribution code, not torch.
    code = ("import sys, types; pkg = types.ModuleType('berg'); pkg.__path__ = [sys.argv[3]]; sys.modules['berg'] = pkg; "
            "from berg import fetch as dl; from _support import tiny_card; "
            "dl.download(tiny_card(), subjects=[1, 2], berg_dir=sys.argv[1], endpoint_url=sys.argv[2], "
            "show_progress=False)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), bucket["endpoint"], str(REPO / "berg")], cwd=REPO, env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    model_dir = tmp_path / bucket["card"].folder
    manifest = json.loads((model_dir / MANIFEST).read_text())
    assert sorted(manifest) == sorted(bucket["files"])
    for rel in bucket["files"]:
        assert _sha(model_dir / rel) == manifest[rel]["sha256"] == _sha(bucket["src"] / rel)
    assert not list(model_dir.rglob("*.part*"))


def test_truncated_file_is_detected_and_fetched_again(bucket, tmp_path, get_ranges):
    card = bucket["card"]
    dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    target = tmp_path / card.folder / SUBJECT_FILES[1]
    good = target.read_bytes()
    target.write_bytes(good[:100])
    get_ranges.clear()
    dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    assert target.read_bytes() == good
    assert [r for _, r in get_ranges] == [f"bytes=0-{len(good) - 1}"]  # only the damaged file was fetched


def test_interrupted_download_resumes_with_the_remaining_range(bucket, tmp_path, monkeypatch, get_ranges):
    monkeypatch.setattr(dl, "PART_SIZE", 4096)
    card = bucket["card"]
    rel = SUBJECT_FILES[0]
    data = (bucket["src"] / rel).read_bytes()
    model_dir = tmp_path / card.folder
    etag = s3_client(bucket["endpoint"]).head_object(Bucket=BUCKET, Key=card.data["sources"][0]["prefix"] + rel)
    etag = etag["ETag"].strip('"')
    part = model_dir / f"encoding_models_weights/.pca_weights.npy.{hashlib.sha256(etag.encode()).hexdigest()[:12]}.part"
    part.parent.mkdir(parents=True)
    done = 3 * 4096 + 100  # what an interrupted run left behind
    part.write_bytes(data[:done])
    dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    assert (model_dir / rel).read_bytes() == data
    requested = sorted((r for k, r in get_ranges if k.endswith(rel)), key=lambda r: int(r[6:].split("-")[0]))
    assert requested == [f"bytes={o}-{min(o + 4096, len(data)) - 1}" for o in range(done, len(data), 4096)]
    assert not part.exists()


def test_corrupt_partial_file_fails_the_etag_check_and_is_refetched(bucket, tmp_path, get_ranges):
    card = bucket["card"]
    rel = SUBJECT_FILES[2]
    data = (bucket["src"] / rel).read_bytes()
    model_dir = tmp_path / card.folder
    etag = s3_client(bucket["endpoint"]).head_object(Bucket=BUCKET, Key=card.data["sources"][0]["prefix"] + rel)
    tag = hashlib.sha256(etag["ETag"].strip('"').encode()).hexdigest()[:12]
    part = model_dir / f"metadata/.metadata_sub-01.npy.{tag}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 50)  # right length prefix, wrong bytes
    dl.download(card, subjects=[1], berg_dir=tmp_path, endpoint_url=bucket["endpoint"], show_progress=False)
    assert (model_dir / rel).read_bytes() == data
    assert (card.data["sources"][0]["prefix"] + rel, f"bytes=0-{len(data) - 1}") in get_ranges  # fetched whole


def test_multipart_etag_is_verified(bucket, tmp_path):
    source = dl._S3Source(Source("s3", bucket=BUCKET, region="us-west-2", prefix="tests/"), bucket["endpoint"])
    entry = source.fetch("multipart.bin", tmp_path / "multipart.bin", show_progress=False)
    assert entry["etag"].endswith("-3")
    assert (tmp_path / "multipart.bin").read_bytes() == bucket["big"]
    assert entry["sha256"] == hashlib.sha256(bucket["big"]).hexdigest()
    assert entry["verified"] == "size+etag"  # the part size came from a PartNumber=1 HEAD
    sha, composite = dl._file_digests(tmp_path / "multipart.bin", 5 * 1024 * 1024)
    assert composite == entry["etag"] and sha == entry["sha256"]
    assert dl._file_digests(tmp_path / "multipart.bin", 0)[1] == hashlib.md5(bucket["big"]).hexdigest()


def test_is_offline_and_default_berg_dir(monkeypatch, tmp_path):
    for value, expected in [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("", False)]:
        monkeypatch.setenv("BERG_OFFLINE", value)
        assert dl.is_offline() is expected
    monkeypatch.setenv("BERG_HOME", str(tmp_path))
    assert dl.default_berg_dir() == tmp_path
    monkeypatch.delenv("BERG_HOME")
    assert dl.default_berg_dir().name == "berg"


def test_cli_parser():
    from berg.cli import build_parser

    args = build_parser().parse_args(["download", "fmri-bmd-s3d", "--subject", "1", "--subject", "group",
                                      "--subject", "5", "--berg-dir", "/x", "--endpoint-url", "http://h:1"])
    assert (args.model, args.subjects, args.berg_dir, args.endpoint_url) == ("fmri-bmd-s3d", [1, "group", 5], "/x",
                                                                          "http://h:1")


def test_download_is_a_public_function():
    import berg

    assert berg.download is dl.download  # berg.download(...) works, as berg download does on the command line
