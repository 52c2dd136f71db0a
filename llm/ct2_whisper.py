"""Whisper encoders from CTranslate2 (faster-whisper) model directories.

Many people hold Whisper only in CTranslate2's format: a ``model.bin`` beside a
``config.json`` that describes alignment heads and token ids, not the network's shape.
``model.bin`` is a flat list of named, typed arrays, so it parses with numpy alone; we read
the encoder's arrays, take the shape from them (``encoder/num_heads`` is stored as a scalar),
and map them onto an HF :class:`WhisperEncoder` with strict loading.

The file layout (binary version 6, little endian)::

    u32 version, str spec_name, u32 spec_revision, u32 n_variables,
    n_variables x (str name, u8 rank, rank x u32 dim, u8 dtype, u32 n_bytes, bytes),
    u32 n_aliases, n_aliases x (str alias, str target)

where ``str`` is a u16 length (terminating NUL included) followed by the bytes.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from parley.errors import CheckpointError
from parley.weights import load_state

CT2_MODEL_FILE = "model.bin"
_SUPPORTED_VERSIONS = (5, 6)
# CTranslate2's DataType enum.
_DTYPES: dict[int, type | str] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",
}
_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
_ENC = "encoder/"


def _parts(path: Path) -> list[Path]:
    """``model.bin.part1``, ``.part2``, ...: a model.bin some packages ship split in pieces."""
    parts = sorted(path.glob(CT2_MODEL_FILE + ".part*"), key=lambda p: p.suffix)
    return parts if parts and parts[0].name.endswith(".part1") else []


def is_ct2_model(path: Path) -> bool:
    """True for a directory holding a CTranslate2 ``model.bin`` (whole, or split into
    ``model.bin.part1``, ``.part2``, ...) and no HF weights."""
    path = Path(path)
    has_bin = (path / CT2_MODEL_FILE).is_file() or bool(_parts(path))
    return has_bin and not any(
        (path / f).is_file()
        for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )


class _Reader:
    def __init__(self, data: bytes, source: Path) -> None:
        self.buf = io.BytesIO(data)
        self.source = source

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        raw = self.buf.read(size)
        if len(raw) != size:
            raise CheckpointError(f"{self.source}: truncated CTranslate2 model file")
        return struct.unpack("<" + fmt, raw)[0]

    def string(self) -> str:
        raw = self.buf.read(self.take("H"))
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")

    def array(self, dtype_id: int, dims: list[int], n_bytes: int) -> np.ndarray:
        raw = self.buf.read(n_bytes)
        if len(raw) != n_bytes:
            raise CheckpointError(f"{self.source}: truncated CTranslate2 model file")
        kind = _DTYPES.get(dtype_id)
        if kind is None:
            raise CheckpointError(f"{self.source}: unknown CTranslate2 dtype id {dtype_id}")
        if kind == "bfloat16":
            # bfloat16 is the top half of a float32.
            words = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            return words.view(np.float32).reshape(dims)
        return np.frombuffer(raw, dtype=kind).reshape(dims)


def read_ct2_variables(path: Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the variables (those starting with ``prefix``) of a ``model.bin``."""
    path = Path(path)
    try:
        pieces = _parts(path.parent) if not path.exists() else []
        data = b"".join(p.read_bytes() for p in pieces) if pieces else path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    r = _Reader(data, path)
    version = r.take("I")
    if version not in _SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path}: CTranslate2 binary version {version}; supported: {_SUPPORTED_VERSIONS}"
        )
    spec = r.string()
    r.take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.take("I")):
        name = r.string()
        dims = [r.take("I") for _ in range(r.take("B"))]
        dtype_id = r.take("B")
        n_bytes = r.take("I")
        if name.startswith(prefix):
            variables[name] = r.array(dtype_id, dims, n_bytes)
        else:
            r.buf.seek(n_bytes, io.SEEK_CUR)
    return spec, variables


def _encoder_config(v: dict[str, np.ndarray], source: Path) -> WhisperConfig:
    try:
        d_model, n_mels, _ = v[_ENC + "conv1/weight"].shape
        heads = int(v[_ENC + "num_heads"].reshape(-1)[0])  # stored as a 1-element array
        ffn_dim = v[_ENC + "layer_0/ffn/linear_0/weight"].shape[0]
        positions = v[_ENC + "position_encodings/encodings"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{source}: not a Whisper encoder (no {exc.args[0]!r})") from None
    layers = 0
    while f"{_ENC}layer_{layers}/ffn/linear_0/weight" in v:
        layers += 1
    return WhisperConfig(
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=int(ffn_dim),
        max_source_positions=int(positions),
        # The decoder is never built; its fields only have to be valid.
        decoder_layers=1,
        decoder_attention_heads=1,
        decoder_ffn_dim=8,
        max_target_positions=16,
        # Every PretrainedConfig takes this keyword, though the subclasses do not list it.
        attn_implementation="eager",  # type: ignore[call-arg]
    )


def _hf_tensors(v: dict[str, np.ndarray], cfg: WhisperConfig) -> dict[str, torch.Tensor]:
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[_ENC + name], dtype=np.float32))

    out = {
        "conv1.weight": t("conv1/weight"),
        "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"),
        "conv2.bias": t("conv2/bias"),
        "embed_positions.weight": t("position_encodings/encodings"),
        "layer_norm.weight": t("layer_norm/gamma"),
        "layer_norm.bias": t("layer_norm/beta"),
    }
    d = cfg.d_model
    for i in range(cfg.encoder_layers):
        src, dst = f"layer_{i}/", f"layers.{i}."
        # CTranslate2 fuses q, k, v into one projection; Whisper's k has no bias (CT2 stores
        # zeros there).
        qkv_w, qkv_b = (
            t(src + "self_attention/linear_0/weight"),
            t(src + "self_attention/linear_0/bias"),
        )
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{dst}self_attn.{name}.weight"] = qkv_w[j * d : (j + 1) * d]
            if name != "k_proj":
                out[f"{dst}self_attn.{name}.bias"] = qkv_b[j * d : (j + 1) * d]
        pairs = {
            "self_attn.out_proj": "self_attention/linear_1",
            "fc1": "ffn/linear_0",
            "fc2": "ffn/linear_1",
        }
        for hf, ct2 in pairs.items():
            out[f"{dst}{hf}.weight"] = t(src + ct2 + "/weight")
            out[f"{dst}{hf}.bias"] = t(src + ct2 + "/bias")
        for hf, ct2 in (("self_attn_layer_norm", "self_attention"), ("final_layer_norm", "ffn")):
            out[f"{dst}{hf}.weight"] = t(src + ct2 + "/layer_norm/gamma")
            out[f"{dst}{hf}.bias"] = t(src + ct2 + "/layer_norm/beta")
    return out


def load_ct2_encoder(path: Path) -> tuple[WhisperEncoder, WhisperConfig]:
    """The Whisper encoder of a CTranslate2 model directory (or its ``model.bin``)."""
    path = Path(path)
    model_file = path if path.is_file() else path / CT2_MODEL_FILE
    spec, variables = read_ct2_variables(model_file, prefix=_ENC)
    if spec != "WhisperSpec":
        raise CheckpointError(f"{model_file}: a CTranslate2 {spec!r} model, not Whisper")
    cfg = _encoder_config(variables, model_file)
    encoder = WhisperEncoder(cfg)
    load_state(encoder, _hf_tensors(variables, cfg), f"CTranslate2 encoder in {model_file}")
    return encoder.eval(), cfg


def write_ct2_encoder(encoder: WhisperEncoder, path: Path, dtype=np.float16) -> Path:
    """Write ``encoder`` as a CTranslate2 Whisper ``model.bin`` (encoder variables only).

    The inverse of :func:`load_ct2_encoder`, for tests and for handing our encoder to
    CTranslate2-based tools; the decoder a full faster-whisper model needs is not written.
    """
    cfg = encoder.config
    state = {k: v.detach().float().numpy() for k, v in encoder.state_dict().items()}
    d = cfg.d_model
    v: dict[str, np.ndarray] = {
        "conv1/weight": state["conv1.weight"],
        "conv1/bias": state["conv1.bias"],
        "conv2/weight": state["conv2.weight"],
        "conv2/bias": state["conv2.bias"],
        "position_encodings/encodings": state["embed_positions.weight"],
        "layer_norm/gamma": state["layer_norm.weight"],
        "layer_norm/beta": state["layer_norm.bias"],
        "num_heads": np.array(cfg.encoder_attention_heads, dtype=np.int16),
    }
    for i in range(cfg.encoder_layers):
        src, dst = f"layers.{i}.", f"layer_{i}/"
        a = src + "self_attn."
        v[dst + "self_attention/linear_0/weight"] = np.concatenate(
            [state[a + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj")]
        )
        v[dst + "self_attention/linear_0/bias"] = np.concatenate(
            [state[a + "q_proj.bias"], np.zeros(d, np.float32), state[a + "v_proj.bias"]]
        )
        for hf, ct2 in (
            ("self_attn.out_proj", "self_attention/linear_1"),
            ("fc1", "ffn/linear_0"),
            ("fc2", "ffn/linear_1"),
        ):
            v[f"{dst}{ct2}/weight"] = state[src + hf + ".weight"]
            v[f"{dst}{ct2}/bias"] = state[src + hf + ".bias"]
        for hf, ct2 in (("self_attn_layer_norm", "self_attention"), ("final_layer_norm", "ffn")):
            v[f"{dst}{ct2}/layer_norm/gamma"] = state[src + hf + ".weight"]
            v[f"{dst}{ct2}/layer_norm/beta"] = state[src + hf + ".bias"]

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(v)))
    for name in sorted(v):
        arr = v[name]
        arr = arr if arr.dtype == np.int16 else arr.astype(dtype)
        arr = np.ascontiguousarray(arr)
        out += [string(_ENC + name), struct.pack("<B", arr.ndim)]
        out += [struct.pack("<I", n) for n in arr.shape]
        out += [struct.pack("<BI", _DTYPE_IDS[arr.dtype], arr.nbytes), arr.tobytes()]
    out.append(struct.pack("<I", 0))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CT2_MODEL_FILE).write_bytes(b"".join(out))
    return path / CT2_MODEL_FILE
