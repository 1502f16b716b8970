"""Integrity checks of the native plugin's own model loading (issue 9, items 2 and 3).

The raw C++ routes (``LatentBiasForce(path)``, ``LatentBiasForce.fromModelData(bytes)``, XML deserialization) verify
the SHA-256 checksums a latentbias model file carries, as ``lb.load_model`` does, and refuse native descriptions whose
array shapes overflow, instead of loading changed weights or allocating from a wrapped size. Every check is fed a
file that Python's own loader also refuses (or a valid one both accept), so the two loaders agree.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile

import openmm
import pytest

import latentbias as lb
from latentbias import native
from latentbias.export import _archive_with_checksums

from conftest import perturbed_frames

if not native.is_available():
    pytest.skip(f"native plugin not available: {native.unavailable_reason()}", allow_module_level=True)

from test_force_safety import _format_1  # noqa: E402
from test_native_path import _native_files, _rebuilt, export, featurizer  # noqa: E402

FIX = "re-export the model"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, ala2):
    """A latentbias model file (format 2) with a native description: distances between heavy atoms."""
    _, top, xyz = ala2
    frames = perturbed_frames(xyz, 40, scale=0.03)
    return export(tmp_path_factory.mktemp("model") / "d.pt", featurizer("distances", top, xyz), top.n_atoms, frames)


def _entry_data_offset(data: bytes, entry: str) -> int:
    """Offset of the first data byte of archive entry `entry` (name without the archive folder), from the local
    file header (its extra field may differ from the central directory's)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = next(i for i in zf.infolist() if i.filename.split("/", 1)[-1] == entry)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def _rezipped(data: bytes, edit) -> bytes:
    """The archive with each entry passed through ``edit(name, bytes)``, with fresh zip CRCs (checksums unchanged)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename.split("/", 1)[-1], zin.read(info)))
    return out.getvalue()


def _native_force_raises(path, *fragments):
    """LatentBiasForce(path) and fromModelData(bytes) both raise, with every fragment in the message (the file's
    name with the path constructor)."""
    plugin = native.load()
    with pytest.raises(openmm.OpenMMException) as info:
        plugin.LatentBiasForce(str(path))
    message = str(info.value)
    assert f"model file '{path}'" in message, message
    for fragment in fragments:
        assert fragment in message, message
    with pytest.raises(openmm.OpenMMException, match=re.escape(fragments[0])):
        plugin.LatentBiasForce.fromModelData(path.read_bytes())
    with pytest.raises(ValueError, match=re.escape(str(path))):  # the Python loader agrees
        lb.load_model(path)


def test_a_flipped_byte_in_an_array_entry_is_named(model_path, tmp_path):
    """One flipped byte inside a native array entry, and inside the weights tensor data/0: the entry's zip CRC no
    longer matches; the C++ constructor names the file, the entry and the fix. The intact file loads."""
    native.load().LatentBiasForce(str(model_path))
    data = model_path.read_bytes()
    for k, entry in enumerate(["extra/latentbias_native.1.bin", "data/0"]):
        bad = bytearray(data)
        bad[_entry_data_offset(data, entry) + 5] ^= 0x04
        target = tmp_path / f"flipped{k}.pt"
        target.write_bytes(bytes(bad))
        _native_force_raises(target, f"archive entry '{entry}' is damaged", FIX)


def test_64_flipped_bytes_anywhere_are_refused_by_the_native_constructor(model_path, tmp_path):
    """The reproducer of the issue (64 flipped bytes in model.pt) on the native route: inside each entry (header and
    data), and at a third, half and the end of the file, LatentBiasForce(path) raises naming the file, as
    lb.load_model does (tests/test_force_safety.py::test_model_file_checksums_catch_flipped_bytes)."""
    data = model_path.read_bytes()
    with zipfile.ZipFile(model_path) as zf:
        targets = [info.header_offset + 100 for info in zf.infolist()]
    targets += [len(data) // 3, len(data) // 2, len(data) - 200]
    plugin = native.load()
    for k, offset in enumerate(targets):
        bad = bytearray(data)
        for i in range(offset, min(offset + 64, len(bad))):
            bad[i] ^= 0xFF
        target = tmp_path / f"bad{k}.pt"
        target.write_bytes(bytes(bad))
        with pytest.raises(openmm.OpenMMException, match=re.escape(f"model file '{target}'")):
            plugin.LatentBiasForce(str(target))


def _local_header(data: bytes, info: zipfile.ZipInfo) -> tuple[int, int, int]:
    """(start of the local name, start of the local extra field, first data byte) of an entry."""
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    name = info.header_offset + 30
    return name, name + name_len, name + name_len + extra_len


def _python_refuses(path) -> bool:
    try:
        lb.load_model(path)
    except ValueError:
        return True
    return False


def test_flipped_bytes_in_local_headers_and_deflated_entries_are_refused(model_path, tmp_path):
    """The formerly intermittent failure of the issue's reproducer on deflated entries had two causes.

    1. libtorch's zip reader never reads an entry's local-header name (only its length), while Python's zipfile
       compares it with the central directory. 64 bytes flipped from 100 bytes past a local header hit the name of
       entries whose name is longer than 70 bytes (``.../___torch_mangle_N.py.debug_pkl``) and, when the alignment
       padding after it is long enough (it depends on the sizes of the entries before), nothing else.
    2. libtorch's getRecord does not notice a deflate stream that fails to inflate (miniz sets no error code for it)
       and returns a buffer whose tail was never written: when the allocator handed back memory that still held the
       intact entry from an earlier read, its CRC-32 and SHA-256 matched and the damaged file was accepted, depending
       on the process's allocation history (seen once, then refused three times, for the same bytes in one process).

    Deterministic now: for every entry, flips aimed at the first and last byte of its local name, and for deflated
    entries at their first, middle and last data byte, their alignment padding and the original 64 bytes from +100,
    each file loaded right after the intact model (so that intact bytes are likely in freed memory), half under one
    reused name and half under distinct names, in one process. Every file lb.load_model refuses LatentBiasForce(path)
    refuses, naming the file; local-name flips are refused by the zip structure check and corrupt deflate streams
    as data that do not inflate."""
    data = model_path.read_bytes()
    with zipfile.ZipFile(model_path) as zf:
        infos = zf.infolist()
    assert any(info.compress_type == zipfile.ZIP_DEFLATED for info in infos)  # torch deflates code and debug symbols
    plugin = native.load()
    cases = []
    for info in infos:
        name, extra, first = _local_header(data, info)
        spans = [(name, 1), (extra - 1, 1)]  # the local name's first and last byte
        if info.compress_type == zipfile.ZIP_DEFLATED:  # stored entries' data: the tests above
            spans += [(first, 1), (first + info.compress_size // 2, 1), (first + info.compress_size - 1, 1),
                      (info.header_offset + 100, 64)]
            if first > extra:
                spans.append((first - 1, 1))  # alignment padding: read by neither loader
        cases += [(info, start, length) for start, length in spans]
    refused = {"local name": 0, "does not inflate": 0, "other": 0}
    for k, (info, start, length) in enumerate(cases):
        bad = bytearray(data)
        for i in range(start, min(start + length, len(bad))):
            bad[i] ^= 0xFF
        target = tmp_path / ("reused.pt" if k % 2 else f"flip{k}.pt")
        target.write_bytes(bytes(bad))
        plugin.LatentBiasForce(str(model_path))  # the intact entries, read just before
        if not _python_refuses(target):
            try:  # what Python accepts loads here too (padding), but for a stricter zip structure check
                plugin.LatentBiasForce(str(target))
            except openmm.OpenMMException as exc:  # (Python never reads .data/serialization_id's local header)
                assert "zip structure is damaged" in str(exc), str(exc)
            continue
        with pytest.raises(openmm.OpenMMException, match=re.escape(f"model file '{target}'")) as exc:
            plugin.LatentBiasForce(str(target))
        message = str(exc.value)
        refused["local name" if "names it differently" in message else
                "does not inflate" if "compressed data do not inflate" in message else "other"] += 1
    assert refused["local name"] >= len(infos), refused
    assert refused["does not inflate"] >= 5, refused


def test_a_flipped_local_header_name_is_named(model_path, tmp_path):
    """One flipped byte in the local-header name of a deflated entry (the cause of the former gap): the error names
    the entry, what differs and the fix, on both native routes."""
    data = model_path.read_bytes()
    with zipfile.ZipFile(model_path) as zf:
        info = next(i for i in zf.infolist() if i.compress_type == zipfile.ZIP_DEFLATED)
    name, _, _ = _local_header(data, info)
    bad = bytearray(data)
    bad[name + 3] ^= 0x01  # stays ASCII: a different name, not a decoding error
    target = tmp_path / "local_name.pt"
    target.write_bytes(bytes(bad))
    _native_force_raises(target, f"local header of '{info.filename}' names it differently", "zip structure", FIX)


def _zip_header_offsets(data: bytes, infos, every: int = 1) -> list[int]:
    """Every `every`-th byte offset of the zip structure of `infos`: local headers (fixed part, name, extra), their
    central directory entries, and the end records (zip64 end record, locator, end of central directory)."""
    offsets = []
    for info in infos:
        _, _, first = _local_header(data, info)
        offsets += range(info.header_offset, first)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        start = zf.start_dir
    at = start
    wanted = {info.filename for info in infos}
    while data[at:at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[at + 28:at + 34])
        end = at + 46 + name_len + extra_len + comment_len
        if data[at + 46:at + 46 + name_len].decode() in wanted:
            offsets += range(at, end)
        at = end
    offsets += range(at, len(data))
    return offsets[::every]


def _differential(data: bytes, offsets, tmp_path) -> tuple[int, list[int]]:
    """(how many of the one-byte flips at `offsets` Python's verified reader refuses, the offsets of those the
    native route accepts)."""
    from latentbias.export import _read_verified

    plugin = native.load()
    target = tmp_path / "fuzz.pt"
    refused, accepted = 0, []
    for offset in offsets:
        bad = bytearray(data)
        bad[offset] ^= 0xFF
        target.write_bytes(bytes(bad))
        try:
            _read_verified(target)
            continue
        except ValueError:
            refused += 1
        try:
            plugin.LatentBiasForce.fromModelData(bytes(bad))
            accepted.append(offset)
        except openmm.OpenMMException:
            pass
    return refused, accepted


def test_flipped_zip_structure_bytes_python_refuses_the_native_route_refuses(model_path, tmp_path):
    """Differential check of the zip structure (the fast subset): one byte flipped at each byte of the headers of
    the first, a deflated and the last entry (local and central) and of the end records. Before the structure check,
    the native route accepted flips in local names, in a central entry's "version needed" byte, in the archive
    folder of a central name (libtorch's getAllRecords threw and the checks were skipped) and in the zip64 end
    records, all of which Python's zipfile refuses."""
    data = model_path.read_bytes()
    with zipfile.ZipFile(model_path) as zf:
        infos = zf.infolist()
    chosen = [infos[0], next(i for i in infos if i.compress_type == zipfile.ZIP_DEFLATED), infos[-1]]
    refused, accepted = _differential(data, _zip_header_offsets(data, chosen), tmp_path)
    assert refused > 100  # the check is exercised
    assert not accepted, f"one-byte flips at {accepted} refused by lb.load_model, accepted by the native route"


@pytest.mark.slow
def test_every_zip_structure_byte_flip_python_refuses_the_native_route_refuses(model_path, tmp_path):
    """The exhaustive version: every byte of every entry's local and central header and of the end records
    (about 7000 flips, a few minutes)."""
    data = model_path.read_bytes()
    with zipfile.ZipFile(model_path) as zf:
        infos = zf.infolist()
    refused, accepted = _differential(data, _zip_header_offsets(data, infos), tmp_path)
    assert refused > 1000
    assert not accepted, f"one-byte flips at {accepted} refused by lb.load_model, accepted by the native route"


def test_edited_entries_with_valid_zip_crcs_fail_the_checksums(model_path, tmp_path):
    """An edited weight byte or metadata value, re-zipped (valid CRCs) with the old checksums: the content / metadata
    SHA-256 does not match."""
    data = model_path.read_bytes()

    def weight(name, b):
        return b[:9] + bytes([b[9] ^ 0x01]) + b[10:] if name == "extra/latentbias_native.1.bin" else b

    def metadata(name, b):
        if name != "extra/latentbias.json":
            return b
        meta = json.loads(b)
        meta["n_atoms_note"] = "edited"
        return json.dumps(meta).encode()

    for label, edit, fragment in [("weights", weight, "checksums.content_sha256"),
                                  ("metadata", metadata, "checksums.metadata_sha256")]:
        target = tmp_path / f"edited_{label}.pt"
        target.write_bytes(_rezipped(data, edit))
        _native_force_raises(target, fragment, "corrupt or was edited", FIX)


def test_the_two_loaders_agree_on_canonical_metadata(model_path, tmp_path):
    """Metadata with floats of every repr form, nested keys out of order and non-ASCII text, checksummed by the
    Python writer: the C++ canonical JSON (sorted keys, ASCII escapes, Python's float repr) gives the same digest."""
    mf = lb.load_model(model_path)
    meta = dict(mf.metadata)
    meta["zz_extra"] = {"b": [1e-7, 1e16, 1e15, 0.1, -0.0, 2.5e-5, 123456789.125, 5e-324],
                        "a": "caf\u00e9 \u2603 \U0001F600 \"q\" \\ \x7f", "": None, "flag": True}
    target = tmp_path / "canonical.pt"
    target.write_bytes(_archive_with_checksums(mf.module, meta, mf.native_files))
    lb.load_model(target)
    force = native.load().LatentBiasForce(str(target))
    assert force.getModelLatentDim() == 3


def test_format_version_edited_to_1_is_refused_and_a_format_1_file_warns(model_path, tmp_path, capfd):
    """The downgrade hole on the native routes: a model whose format_version was edited to 1 (skipping every check)
    but which holds its checksums is refused, as lb.load_model refuses it; a genuine format-1 file (no checksums) is
    loaded with a warning on stderr that names the file, says it is unverified and how to re-export it. A verified
    file warns nothing."""
    data = model_path.read_bytes()
    edited = tmp_path / "downgraded.pt"
    edited.write_bytes(_format_1(data, keep_checksums=True))
    _native_force_raises(edited, "a format-1 file never held them", FIX)
    old = tmp_path / "format1.pt"
    old.write_bytes(_format_1(data, keep_checksums=False))
    capfd.readouterr()
    native.load().LatentBiasForce(str(old))
    err = capfd.readouterr().err
    assert f"WARNING: the model file '{old}' carries no checksums" in err, err
    assert "loaded unverified" in err and "archive_bytes" in err, err
    native.load().LatentBiasForce(str(model_path))
    assert "WARNING" not in capfd.readouterr().err


def _fnv1a64(data: bytes) -> str:
    """The serialized force's outer checksum (LatentBiasUtilities.cpp:checksum64)."""
    h = 14695981039346656037
    for byte in data:
        h = ((h ^ byte) * 1099511628211) % (1 << 64)
    return f"{h:016x}"


def test_a_serialized_force_with_a_damaged_model_is_refused(model_path, tmp_path):
    """An XML whose embedded model was edited and whose outer checksum was recomputed: the model's own SHA-256
    checksums still refuse it, and the error says it comes from a serialized force."""
    import base64

    force = native.load().LatentBiasForce(str(model_path))
    xml = openmm.XmlSerializer.serialize(force)
    data = model_path.read_bytes()
    bad = _rezipped(data, lambda name, b: b[:9] + bytes([b[9] ^ 1]) + b[10:] if name == "data/0" else b)
    xml = re.sub(r'model="[^"]*"', f'model="{base64.b64encode(bad).decode()}"', xml, count=1)
    xml = re.sub(r'modelChecksum="[^"]*"', f'modelChecksum="{_fnv1a64(bad)}"', xml, count=1)
    with pytest.raises(openmm.OpenMMException, match=r"serialized force.*checksums\.content_sha256"):
        openmm.XmlSerializer.deserialize(xml)


def test_native_array_shapes_that_overflow_are_refused(model_path, tmp_path):
    """A description whose array shape multiplies to 2^64 (wraps to 0 in 64 bits, which an empty array file would
    match), with fresh valid checksums: refused with the field and the reason, before any size is used."""
    files = _native_files(model_path)
    doc = json.loads(files["latentbias_native.json"])
    ref = doc["features"][0]["pairs"]
    ref["shape"] = [2 ** 31, 2 ** 31, 4]
    bad = {**files, "latentbias_native.json": json.dumps(doc).encode(), ref["file"]: b""}
    target = _rebuilt(tmp_path, model_path, bad, "overflow.pt")
    with pytest.raises(openmm.OpenMMException, match=r"features\[0\]\.pairs\.shape .* holds more than 2147483648"):
        native.load().LatentBiasForce.fromModelData(target.read_bytes())


def test_crafted_xml_grid_whose_size_overflows_is_refused(model_path):
    """A serialized force whose three grid dimensions were edited to 65536 points each (65536^3 = 2^48 overflows
    32-bit products; the issue's segfault at Context creation): refused at deserialization, no crash."""
    force = native.load().LatentBiasForce(str(model_path))
    for component in range(3):
        force.addGridDimension(component, -1.0, 1.0, 5, False)
    xml = openmm.XmlSerializer.serialize(force)
    assert xml.count('size="5"') == 3
    with pytest.raises(openmm.OpenMMException, match="larger than the 4194304 points allowed"):
        openmm.XmlSerializer.deserialize(xml.replace('size="5"', 'size="65536"'))
