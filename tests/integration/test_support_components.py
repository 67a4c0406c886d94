"""Self-tests of the test-support layer: each real component works across the real wire."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy
import pydicom
import pytest
import requests
from pydicom.uid import UID

from tests.support import dcmtk
from tests.support.http_fault_server import (
    HttpFaultServer,
    encode_multipart_related,
    parse_multipart_related,
)
from tests.support.orthanc import OrthancServer
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import (
    PRIVATE_SOP_CLASS_UID,
    SampleInstance,
    make_corpus,
    make_large_instance,
    make_samples,
    pixel_data_bytes,
    pixel_data_sha256,
    sample_files,
)

LOCALHOST = "127.0.0.1"


def assert_stored_faithfully(
    orthanc: OrthancServer, samples: list[SampleInstance], *, exact_native: bool = True
) -> None:
    """Every sample is in Orthanc, in its own transfer syntax, with identical pixel data bytes.

    With ``exact_native=False`` an uncompressed sample may have been converted to another
    uncompressed syntax (as dcmsend does): then the decoded pixels must be equal instead.
    """
    stored = set(orthanc.instances())
    for sample in samples:
        assert sample.sop_instance_uid in stored, sample.kind
        data = orthanc.wado_instance(sample.study_uid, sample.series_uid, sample.sop_instance_uid)
        dataset = pydicom.dcmread(io.BytesIO(data))
        assert dataset.SOPClassUID == sample.sop_class_uid, sample.kind
        if exact_native or UID(sample.transfer_syntax_uid).is_compressed:
            assert dataset.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid, sample.kind
            assert pixel_data_bytes(data) == pixel_data_bytes(sample.path), sample.kind
        else:
            assert not dataset.file_meta.TransferSyntaxUID.is_compressed, sample.kind
            assert numpy.array_equal(
                dataset.pixel_array, pydicom.dcmread(sample.path).pixel_array
            ), sample.kind


# --------------------------------------------------------------------------- samples


def test_samples_cover_transfer_syntaxes(tmp_samples: list[SampleInstance]) -> None:
    """The sample set covers the main transfer syntaxes and a private SOP class, fresh UIDs."""
    syntaxes = {sample.transfer_syntax_uid for sample in tmp_samples}
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",
    } <= syntaxes
    assert "1.2.840.10008.1.2.4.50" in syntaxes
    assert {sample.kind for sample in tmp_samples} == set(sample_files())
    private = [sample for sample in tmp_samples if sample.kind == "private_sop_class"]
    assert private and private[0].sop_class_uid == PRIVATE_SOP_CLASS_UID
    assert len({sample.sop_instance_uid for sample in tmp_samples}) == len(tmp_samples)
    for sample in tmp_samples:
        source = pydicom.dcmread(sample_files()[sample.kind])
        assert pixel_data_bytes(sample.path) == source.PixelData
        assert sample.sop_instance_uid != source.SOPInstanceUID


def test_corpus_and_large_instance(tmp_path: Path) -> None:
    """make_corpus spreads instances over studies and series; make_large_instance is valid."""
    corpus = make_corpus(tmp_path / "corpus", 40, studies=4)
    assert len(corpus) == 40
    assert len({sample.study_uid for sample in corpus}) == 4
    assert len({sample.series_uid for sample in corpus}) == 16
    large = make_large_instance(tmp_path / "large", 3)
    assert large.size > 3 * 1024 * 1024
    header = pydicom.dcmread(large.path, stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert int(header.NumberOfFrames) * header.Rows * header.Columns * 2 >= 3 * 1024 * 1024
    assert pixel_data_sha256(large.path) == large.pixel_sha256


# --------------------------------------------------------------------------- Orthanc + DCMTK


def test_orthanc_answers_rest_and_echo(orthanc: OrthancServer) -> None:
    """Orthanc's REST API, DICOMweb plugin and DICOM port answer."""
    assert orthanc.system()["DicomAet"] == orthanc.aet
    assert "dicom-web" in orthanc.get_json("/plugins")
    result = dcmtk.echoscu(LOCALHOST, orthanc.dicom_port, orthanc.aet)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("sender", ["storescu", "dcmsend"])
def test_dcmtk_stores_samples_faithfully_into_orthanc(
    orthanc: OrthancServer, tmp_samples: list[SampleInstance], sender: str
) -> None:
    """storescu (per-file syntax profile) stores every sample kind unchanged; so does dcmsend,
    except that it sends implicit VR / big endian files as explicit VR little endian."""
    before = orthanc.count_instances()
    files = [sample.path for sample in tmp_samples]
    if sender == "storescu":
        result = dcmtk.storescu(
            LOCALHOST, orthanc.dicom_port, files, orthanc.aet, per_file_syntax=True
        )
    else:
        result = dcmtk.dcmsend(LOCALHOST, orthanc.dicom_port, files, orthanc.aet)
    assert result.returncode == 0, result.stdout + result.stderr
    assert orthanc.count_instances() == before + len(tmp_samples)
    assert_stored_faithfully(orthanc, tmp_samples, exact_native=sender == "storescu")


def test_qido_finds_uploaded_instance(orthanc: OrthancServer, tmp_path: Path) -> None:
    """REST upload, then QIDO-RS finds the study."""
    (sample,) = make_samples(tmp_path, ["explicit_le"])
    answer = orthanc.upload(sample.path)
    assert answer["Status"] == "Success"
    studies = orthanc.qido("/studies", {"StudyInstanceUID": sample.study_uid})
    assert [study["0020000D"]["Value"][0] for study in studies] == [sample.study_uid]


def test_corpus_throughput_into_orthanc(orthanc: OrthancServer, tmp_path: Path) -> None:
    """200 C-STOREs on one association are fast (TCP_NODELAY on both sides)."""
    corpus = make_corpus(tmp_path, 200)
    before = orthanc.count_instances()
    result = dcmtk.storescu(
        LOCALHOST, orthanc.dicom_port, [sample.path for sample in corpus], orthanc.aet
    )
    assert result.returncode == 0, result.stderr
    assert orthanc.count_instances() == before + 200


def test_large_instance_round_trip(orthanc: OrthancServer, tmp_path: Path) -> None:
    """A multi-MB instance goes in by dcmsend and comes back identical by WADO-RS."""
    large = make_large_instance(tmp_path, 8)
    result = dcmtk.dcmsend(LOCALHOST, orthanc.dicom_port, [large.path], orthanc.aet)
    assert result.returncode == 0, result.stderr
    data = orthanc.wado_instance(large.study_uid, large.series_uid, large.sop_instance_uid)
    fetched = tmp_path / "fetched.dcm"
    fetched.write_bytes(data)
    assert pixel_data_sha256(fetched) == large.pixel_sha256


def test_find_move_get_against_orthanc(
    orthanc: OrthancServer, store_scp: Callable[..., dcmtk.StoreSCP], tmp_path: Path
) -> None:
    """C-FIND, C-MOVE (to a storescp) and C-GET with DCMTK against Orthanc."""
    (sample,) = make_samples(tmp_path / "in", ["explicit_le"])
    orthanc.upload(sample.path)

    found = dcmtk.findscu(
        LOCALHOST,
        orthanc.dicom_port,
        ["0008,0052=STUDY", f"0020,000D={sample.study_uid}", "0010,0020"],
        orthanc.aet,
        output_dir=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    responses = dcmtk.read_responses(tmp_path)
    assert [response.StudyInstanceUID for response in responses] == [sample.study_uid]

    scp = store_scp(aet="MOVEDEST")
    orthanc.add_modality(f"movedest{scp.port}", scp.aet, LOCALHOST, scp.port)
    moved = dcmtk.movescu(
        LOCALHOST,
        orthanc.dicom_port,
        ["0008,0052=STUDY", f"0020,000D={sample.study_uid}"],
        orthanc.aet,
        destination=scp.aet,
    )
    assert moved.returncode == 0, moved.stderr
    (received,) = scp.wait_for_files(1)
    assert pydicom.dcmread(received).SOPInstanceUID == sample.sop_instance_uid

    get_dir = tmp_path / "get"
    get_dir.mkdir()
    got = dcmtk.getscu(
        LOCALHOST,
        orthanc.dicom_port,
        ["0008,0052=STUDY", f"0020,000D={sample.study_uid}"],
        orthanc.aet,
        output_dir=get_dir,
    )
    assert got.returncode == 0, got.stderr
    (retrieved,) = list(get_dir.iterdir())
    assert pixel_data_bytes(retrieved) == pixel_data_bytes(sample.path)


def test_fresh_orthanc_auth_and_restart(
    fresh_orthanc: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    """A private Orthanc with basic auth keeps its ports and data across restart()."""
    server = fresh_orthanc(users={"alice": "secret"})
    assert requests.get(f"{server.http_url}/system", timeout=5).status_code == 401
    (sample,) = make_samples(tmp_path, ["implicit_le"])
    server.upload(sample.path)
    ports = (server.http_port, server.dicom_port)
    server.restart()
    assert (server.http_port, server.dicom_port) == ports
    assert server.instances() == [sample.sop_instance_uid]
    server.delete_all()
    assert server.count_instances() == 0


# --------------------------------------------------------------------------- storescp


def test_dcmsend_into_storescp(
    store_scp: Callable[..., dcmtk.StoreSCP], tmp_samples: list[SampleInstance]
) -> None:
    """storescp accepting all syntaxes receives every compressed sample bit-for-bit (pixel data)."""
    scp = store_scp()
    result = dcmtk.dcmsend(scp.host, scp.port, [sample.path for sample in tmp_samples], scp.aet)
    assert result.returncode == 0, result.stderr
    received = {
        pydicom.dcmread(path).SOPInstanceUID: path for path in scp.wait_for_files(len(tmp_samples))
    }
    for sample in tmp_samples:
        path = received[sample.sop_instance_uid]
        if UID(sample.transfer_syntax_uid).is_compressed:
            assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == sample.transfer_syntax_uid
            assert pixel_data_bytes(path) == pixel_data_bytes(sample.path)


def test_storescp_implicit_only_refuses_other_syntaxes(
    store_scp: Callable[..., dcmtk.StoreSCP], tmp_path: Path
) -> None:
    """An implicit-only storescp accepts implicit VR LE but refuses a JPEG file."""
    scp = store_scp(syntaxes="implicit")
    implicit, jpeg = make_samples(tmp_path, ["implicit_le", "jpeg_baseline"])
    assert dcmtk.dcmsend(scp.host, scp.port, [implicit.path], scp.aet).returncode == 0
    refused = dcmtk.dcmsend(scp.host, scp.port, [jpeg.path], scp.aet)
    assert refused.returncode != 0
    assert len(scp.received_files()) == 1


# --------------------------------------------------------------------------- Pub/Sub emulator


def test_pubsub_round_trip(pubsub_emulator: PubSubEmulator) -> None:
    """Publish to a fresh topic and pull the message back from its fresh subscription."""
    topic, subscription = pubsub_emulator.new_topic_and_subscription("selftest")
    other_topic, _ = pubsub_emulator.new_topic_and_subscription("selftest")
    assert other_topic != topic
    pubsub_emulator.publish(topic, b"projects/p/instances/1", eventType="OBJECT_FINALIZE")
    (received,) = pubsub_emulator.pull(subscription)
    assert received.message.data == b"projects/p/instances/1"
    assert received.message.attributes["eventType"] == "OBJECT_FINALIZE"
    assert pubsub_emulator.pull(subscription, timeout=1.0) == []


# --------------------------------------------------------------------------- HTTP sink / faults


def test_sink_accepts_stow_and_scripted_faults(
    fault_server: Callable[..., HttpFaultServer], tmp_samples: list[SampleInstance]
) -> None:
    """The sink answers STOW with the uploaded UIDs; scripted faults come first, in order."""
    sink = fault_server()
    body, content_type = encode_multipart_related(
        sample.path.read_bytes() for sample in tmp_samples
    )
    url = f"{sink.url}/dicomWeb/studies"
    sink.fail_next(503, retry_after=2)
    sink.fail_next(409, body=b"conflict")
    sink.drop_next()
    with requests.Session() as session:
        first = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=10)
        assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
        second = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=10)
        assert (second.status_code, second.content) == (409, b"conflict")
        with pytest.raises(requests.ConnectionError):
            session.post(url, data=body, headers={"Content-Type": content_type}, timeout=10)
        ok = session.post(
            url, data=iter([body]), headers={"Content-Type": content_type}, timeout=10
        )  # chunked
    assert ok.status_code == 200
    assert ok.headers["Content-Type"] == "application/dicom+json"
    referenced = ok.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [
        s.sop_instance_uid for s in tmp_samples
    ]
    assert sink.stored_instances == [(s.sop_class_uid, s.sop_instance_uid) for s in tmp_samples]
    assert [request.status for request in sink.requests] == [503, 409, None, 200]
    assert sink.requests[-1].header("transfer-encoding") == "chunked"
    assert sink.pending_faults == 0


def test_fault_proxy_in_front_of_orthanc(
    orthanc: OrthancServer, fault_server: Callable[..., HttpFaultServer], tmp_path: Path
) -> None:
    """The proxy forwards STOW/QIDO/WADO to Orthanc, and injects a fault when scripted."""
    proxy = fault_server(orthanc.http_url)
    (sample,) = make_samples(tmp_path, ["jpeg_baseline"])
    body, content_type = encode_multipart_related([sample.path.read_bytes()])
    stow_url = f"{proxy.url}/dicom-web/studies"
    proxy.fail_next(500, method="POST")
    with requests.Session() as session:
        assert (
            session.post(
                stow_url, data=body, headers={"Content-Type": content_type}, timeout=10
            ).status_code
            == 500
        )
        assert sample.sop_instance_uid not in orthanc.instances()
        stored = session.post(
            stow_url, data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert stored.status_code == 200, stored.text
        found = session.get(
            f"{proxy.url}/dicom-web/studies",
            params={"StudyInstanceUID": sample.study_uid},
            headers={"Accept": "application/dicom+json"},
            timeout=10,
        )
        assert found.status_code == 200 and found.json()[0]["0020000D"]["Value"] == [
            sample.study_uid
        ]
        wado = session.get(
            f"{proxy.url}/dicom-web/studies/{sample.study_uid}/series/{sample.series_uid}/instances/{sample.sop_instance_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=10,
        )
    assert wado.status_code == 200
    (part,) = parse_multipart_related(wado.content, wado.headers["Content-Type"])
    assert pixel_data_bytes(part.content) == pixel_data_bytes(sample.path)
    assert proxy.requests[1].sop_instances == [(sample.sop_class_uid, sample.sop_instance_uid)]
