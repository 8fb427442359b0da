"""The write-ahead spool's segment format and folders (serving/producer.py), on disk, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.producer import (
    MAGIC,
    DiskSpool,
    _Record,
    adopt_orphans,
    claim_folder,
    encode_record,
    scan_segment,
)


def _write(folder: Path, n: int) -> Path:
    spool = DiskSpool(folder, 1 << 24)
    spool.append([_Record("t", f"u{i}".encode(), f'{{"i":{i}}}'.encode()) for i in range(n)])
    spool.close()
    return next(folder.glob("segment-*.spool"))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_flipped_payload_byte_skips_that_record_only(tmp_path: Path) -> None:
    seg = _write(tmp_path, 1000)
    size = len(encode_record(_Record("t", b"u500", b'{"i":500}')))
    offset = sum(len(encode_record(_Record("t", f"u{i}".encode(), f'{{"i":{i}}}'.encode()))) for i in range(500))
    assert size > 20
    _flip(seg, offset + size - 3)  # inside record 500's value
    scan = scan_segment(seg)
    values = [r.value for _, r in scan.records]
    assert len(values) == 999 and scan.corrupt == 1
    assert b'{"i":500}' not in values and values[-1] == b'{"i":999}'


def test_a_flipped_length_byte_resynchronises_on_the_next_record(tmp_path: Path) -> None:
    seg = _write(tmp_path, 1000)
    offset = sum(len(encode_record(_Record("t", f"u{i}".encode(), f'{{"i":{i}}}'.encode()))) for i in range(10))
    _flip(seg, offset + 5)  # record 10's length field
    scan = scan_segment(seg)
    assert len(scan.records) == 999 and scan.corrupt == 1
    assert scan.records[10][1].value == b'{"i":11}'


def test_a_torn_tail_is_cut_when_the_spool_reopens(tmp_path: Path) -> None:
    seg = _write(tmp_path, 20)
    whole = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(MAGIC + b"\x00\x00\x01\x00torn")
    spool = DiskSpool(tmp_path, 1 << 24)
    assert spool.size == 20 and seg.stat().st_size == whole


def test_acknowledged_segments_are_deleted_and_positions_survive_reopen(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 24, segment_bytes=4096)
    first, ends = spool.append([_Record("t", None, b"x" * 100) for _ in range(60)])  # > 4096 bytes
    second, ends2 = spool.append([_Record("t", None, b"y" * 100) for _ in range(5)])
    assert second == first + 1, "a full segment rolls"
    spool.ack(first, ends[-1], 60)
    assert not (tmp_path / f"segment-{first:08d}.spool").exists(), "deleted on delivery"
    spool.ack(second, ends2[1], 2)
    spool.close()
    again = DiskSpool(tmp_path, 1 << 24)
    assert again.size == 3
    [(number, acked, end)] = again.unacknowledged()
    assert (number, acked, end) == (second, ends2[1], ends2[-1])


def test_each_process_gets_its_own_folder_and_dead_ones_are_adopted(tmp_path: Path) -> None:
    mine, lock = claim_folder(tmp_path)
    other, other_lock = claim_folder(tmp_path)  # a second producer in this process: a folder of its own
    assert mine != other and mine.name == f"worker-{os.getpid()}"
    # A folder left by a process that died (nobody holds its lock), with 7 events not acknowledged.
    code = (
        "import sys; from pathlib import Path; from serving.producer import DiskSpool, _Record, claim_folder;"
        "f, lock = claim_folder(Path(sys.argv[1]));"
        "DiskSpool(f, 1 << 20).append([_Record('t', None, b'v%d' % i) for i in range(7)])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env={**os.environ})
    spool = DiskSpool(mine, 1 << 24)
    assert adopt_orphans(tmp_path, spool) == 7
    assert spool.size == 7
    assert other.exists(), "a live producer's folder is never adopted"
    assert [p.name for p in tmp_path.glob("worker-*")].__len__() == 2
    other_lock.close()
    lock.close()


def test_close_during_an_outage_is_fast_and_keeps_everything_in_the_spool(tmp_path: Path) -> None:
    import time

    from serving.producer import EventProducer, ProducerConfig

    # Nothing listens on port 1: every delivery fails after the timeout, as in a broker outage.
    cfg = ProducerConfig("127.0.0.1:1", tmp_path, request_timeout_ms=5000, delivery_timeout_ms=10000)
    producer = EventProducer(cfg).start()
    durable: list[bool] = []
    for i in range(100):
        assert producer.send("t", f"e{i}".encode(), key=b"u")
    assert producer.when_durable(durable.append)
    deadline = time.monotonic() + 5
    while not durable and time.monotonic() < deadline:
        time.sleep(0.01)
    assert durable == [True], "the writer reported the group on disk"
    assert producer.spool_size() == 100
    start = time.monotonic()
    producer.close()
    assert time.monotonic() - start < 2.5, "close does not wait out the broker's timeouts"
    folder = next(tmp_path.glob("worker-*"))
    assert DiskSpool(folder, 1 << 24).size == 100, "everything accepted is still in the spool"
