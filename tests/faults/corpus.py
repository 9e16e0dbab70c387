"""A corpus of broken, hostile and awkward image files, generated cheaply (headers and streamed zeros, never the
full pixel arrays they claim)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["BAD", "GOOD", "build", "png_of_zeros", "dicom"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_of_zeros(path: Path, width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> Path:
    """A valid all-zero PNG of any size, compressed row by row (a 9400 x 9400 16-bit one is ~190 KB)."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte + pixels
    compressor, idat = zlib.compressobj(9), io.BytesIO()
    for _ in range(height):
        idat.write(compressor.compress(row))
    idat.write(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat.getvalue())
        + _chunk(b"IEND", b"")
    )
    return path


def dicom(
    path: Path, pixels: np.ndarray, *, deflate: bool = False, rgb: bool = False, frames: int = 1
) -> Path:
    """A DICOM secondary capture of ``pixels`` (uint8; frames x rows x cols [x 3])."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
        "OT",
    )
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if rgb else (1, "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _deflated_dicom_of_zeros(path: Path, side: int) -> Path:
    """A deflated DICOM claiming side x side 8-bit pixels, written without holding them (a bomb)."""
    small = dicom(path.with_name("template.dcm"), np.zeros((8, 8), np.uint8))
    import pydicom

    ds = pydicom.dcmread(small)
    ds.Rows = ds.Columns = side
    ds.PixelData = b""  # replaced below by a streamed element
    body = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    pydicom.dcmwrite(body, ds, enforce_file_format=True)
    raw = body.getvalue()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    dataset_bytes = raw[meta_end:]
    # the data set ends with an empty (7FE0,0010) Pixel Data element: tag, VR, 2 reserved bytes, 4-byte length
    assert dataset_bytes[-12:-8] == b"\xe0\x7f\x10\x00" and dataset_bytes[-4:] == b"\x00" * 4
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(dataset_bytes[:-4] + struct.pack("<I", side * side))]
    zeros = b"\x00" * side
    for _ in range(side):
        out.append(compressor.compress(zeros))
    out.append(compressor.flush())
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.write_bytes(raw[:128] + b"DICM" + meta.getvalue() + b"".join(out))
    small.unlink()
    return path


def _exif_rotated_jpeg(path: Path) -> Path:
    """A 40 x 20 JPEG (left half black, right half white) whose EXIF says: rotate 90° clockwise to view."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(path, quality=95, exif=exif)
    return path


def multiframe_gray() -> np.ndarray:
    """5 frames of 32 x 40: frame k is dark with a bright band at columns 8k..8k+7."""
    frames = np.full((5, 32, 40), 10, np.uint8)
    for k in range(5):
        frames[k, :, 8 * k : 8 * k + 8] = 200
    return frames


# name → (what read_image must do: "ok" or a message fragment of the refusal)
BAD = {
    "empty.png": "not a readable image",
    "random.png": "not a readable image",
    "truncated.png": "corrupt or truncated",
    "bomb-400mpx.png": "not a readable image",  # over 2x PIL's limit: PIL itself refuses at open
    "bomb-100mpx.png": "exceeds the limit",  # between 1x and 2x: PIL only warns; our explicit check refuses
    "xray16-9400.png": "exceeds the limit",  # 16-bit: 177 MB decoded for 88 Mpx
    "empty.jpg": "not a readable image",
    "random.jpg": "not a readable image",
    "truncated.jpg": "corrupt or truncated",
    "empty.tif": "not a readable image",
    "random.tif": "not a readable image",
    "truncated.tif": "corrupt or truncated",
}
BAD_DICOM = {
    "empty.dcm": "not a readable DICOM",
    "random.dcm": "not a readable DICOM",
    "truncated.dcm": "DICOM",
    "deflated-bomb.dcm": "inflates to more than",
}
GOOD = ("xray16.png", "nan.tif", "exif-rotated.jpg", "rgba.png", "palette.png", "cmyk.jpg", "gray.png")
GOOD_DICOM = ("multiframe-rgb.dcm", "multiframe-gray.dcm")


def build(folder: Path) -> dict[str, Path]:
    """Write every file of the corpus into ``folder``; {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    files = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        files[name] = folder / name

    for suffix, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("tif", "TIFF")):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=fmt)
        put(f"empty.{suffix}", b"")
        put(f"random.{suffix}", os.urandom(3000))
        put(f"truncated.{suffix}", buffer.getvalue()[: len(buffer.getvalue()) // 3])
    files["bomb-400mpx.png"] = png_of_zeros(folder / "bomb-400mpx.png", 20000, 20000)
    files["bomb-100mpx.png"] = png_of_zeros(folder / "bomb-100mpx.png", 10000, 10000)
    files["xray16-9400.png"] = png_of_zeros(folder / "xray16-9400.png", 9400, 9400, bit_depth=16)
    Image.fromarray(np.linspace(0, 60000, 48 * 64).astype(np.uint16).reshape(48, 64)).save(
        folder / "xray16.png"
    )
    nan = np.linspace(-1, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    nan[3, 5] = np.nan
    Image.fromarray(nan, mode="F").save(folder / "nan.tif")
    _exif_rotated_jpeg(folder / "exif-rotated.jpg")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    files.update({name: folder / name for name in GOOD})
    good_dicom = dicom(folder / "multiframe-gray.dcm", multiframe_gray(), frames=5)
    files["multiframe-gray.dcm"] = good_dicom
    files["multiframe-rgb.dcm"] = dicom(
        folder / "multiframe-rgb.dcm",
        rng.integers(0, 256, (5, 32, 40, 3), dtype=np.uint8),
        rgb=True,
        frames=5,
    )
    put("empty.dcm", b"")
    put("random.dcm", os.urandom(3000))
    put("truncated.dcm", good_dicom.read_bytes()[:400])
    files["deflated-bomb.dcm"] = _deflated_dicom_of_zeros(folder / "deflated-bomb.dcm", 20000)
    return files
