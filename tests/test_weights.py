"""The model cache: verified, resumable, locked downloads from a local server, conversion to
decoder-only safetensors, offline errors, and `pixgen models`."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from pixgen.errors import PixgenError
from pixgen.models import cache as weights
from pixgen.models.vqgan import TINY_ARCH, load_decoder_safetensors, load_vqgan
from tests.conftest import write_taming


class _Server:
    """A loopback HTTP server for `files`, honouring Range; `cut` truncates one response."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.hits = files, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append((self.path, self.headers.get("Range")))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in outer.cut:
                    body = body[: outer.cut.pop(self.path)]
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = _Server({"/a.bin": bytes(range(256)) * 4000})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIXGEN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_download_falls_back_to_a_working_mirror(server, tmp_path):
    dest = tmp_path / "a.bin"
    weights.download([server.url + "/missing", server.url + "/a.bin"], dest, show_progress=False)
    assert dest.read_bytes() == server.files["/a.bin"]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "a.bin"
    server.cut["/a.bin"] = 300_000
    with pytest.raises(PixgenError, match="closed after 300000"):
        weights.download([server.url + "/a.bin"], dest, show_progress=False)
    assert not dest.exists() and (tmp_path / "a.bin.part").stat().st_size == 300_000
    weights.download([server.url + "/a.bin"], dest, show_progress=False)
    assert dest.read_bytes() == server.files["/a.bin"]
    assert server.hits[-1] == ("/a.bin", "bytes=300000-")


def test_hash_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    dest = tmp_path / "a.bin"
    with pytest.raises(PixgenError, match="sha256"):
        weights.download([server.url + "/a.bin"], dest, sha256="0" * 64, show_progress=False)
    assert not dest.exists() and not (tmp_path / "a.bin.part").exists()


def test_size_mismatch_is_refused(server, tmp_path):
    with pytest.raises(PixgenError, match="size"):
        weights.download([server.url + "/a.bin"], tmp_path / "a.bin", size=5, show_progress=False)


def test_trust_on_first_use_records_then_verifies(server, tmp_path):
    good = server.files["/a.bin"]
    weights.download([server.url + "/a.bin"], tmp_path / "1.bin", hash_key="k", show_progress=False)
    assert weights._known_hashes()["k"] == hashlib.sha256(good).hexdigest()
    server.files["/a.bin"] = good[::-1]  # the mirror now serves something else
    with pytest.raises(PixgenError, match="sha256"):
        weights.download([server.url + "/a.bin"], tmp_path / "2.bin", hash_key="k", show_progress=False)


def test_two_concurrent_downloads_of_one_file_agree(server, tmp_path):
    dest = tmp_path / "a.bin"
    errors = []

    def fetch():
        try:
            weights.download([server.url + "/a.bin"], dest, show_progress=False)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and dest.read_bytes() == server.files["/a.bin"]
    assert len([h for h in server.hits if h[0] == "/a.bin"]) == 1  # the others found it done


def _registry_for(server, name="tinygan"):
    return {
        "vqgan": {
            name: {
                "target": "VQModel",
                "approx_size_mb": 1,
                "license": "MIT",
                "description": "t",
                "config": [server.url + "/model.yaml"],
                "ckpt": [server.url + "/last.ckpt"],
            }
        }
    }


def test_registry_model_downloads_converts_and_is_reused(server, tmp_path, monkeypatch):
    cfg, ckpt = write_taming(tmp_path)
    server.files.update({"/model.yaml": cfg.read_bytes(), "/last.ckpt": ckpt.read_bytes()})
    monkeypatch.setattr(weights, "registry", lambda: _registry_for(server))
    path = weights.ensure_vqgan("tinygan", show_progress=False)
    assert path.name == "decoder.safetensors"
    folder = path.parent
    assert (folder / "encoder.safetensors").is_file() and (folder / "arch.json").is_file()
    reference = load_vqgan(cfg, ckpt)
    (folder / "last.ckpt").unlink()  # later runs never need the checkpoint again
    server.hits.clear()
    again = load_decoder_safetensors(weights.ensure_vqgan("tinygan", offline=True))
    z = torch.randn(1, 32, 2, 2)
    assert torch.equal(reference(z), again(z)) and server.hits == []


def test_offline_missing_model_names_file_and_command(monkeypatch, server):
    monkeypatch.setattr(weights, "registry", lambda: _registry_for(server))
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    with pytest.raises(PixgenError) as e:
        weights.ensure_vqgan("tinygan")
    msg = str(e.value)
    assert "model.yaml" in msg and "pixgen models download tinygan" in msg and "--vqgan-ckpt" in msg
    assert server.hits == []


def test_unreachable_mirror_fails_fast_with_the_same_advice(monkeypatch):
    reg = {"vqgan": {"g": {"config": ["http://127.0.0.1:9/x.yaml"], "ckpt": ["http://127.0.0.1:9/x.ckpt"]}}}
    monkeypatch.setattr(weights, "registry", lambda: reg)
    with pytest.raises(PixgenError, match="no mirror is reachable.*pixgen models download g"):
        weights.ensure_vqgan("g")


def test_offline_clip_tag_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PixgenError, match="ViT-B-32:openai is not cached.*offline"):
        weights.clip_weights_file("ViT-B-32", "openai")


def test_cli_models_import_info_and_generate(cli, tmp_path):
    cfg, ckpt = write_taming(tmp_path)
    code, out, err = cli("models", "import", "mine", "--config", cfg, "--ckpt", ckpt)
    assert code == 0, err
    code, out, _ = cli("models", "info", "mine")
    assert code == 0 and "codebook: 64 x 32" in out and "factor: 2" in out
    code, _, err = cli(
        "a cat",
        "--set",
        "vqgan=mine",
        "--clip",
        "tiny",
        "-s",
        "16x16",
        "-i",
        "2",
        "--cutn",
        "2",
        "-o",
        tmp_path / "o",
        "--offline",
    )
    assert code == 0, err


def test_cli_offline_generate_without_model_exits_2(cli, tmp_path):
    code, _, err = cli("a cat", "--clip", "tiny", "--offline", "-o", tmp_path / "o")
    assert code == 2 and "vqgan_imagenet_f16_16384" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_model_names_are_refused():
    for name in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(PixgenError):
            weights.vqgan_dir(name)


def test_tiny_arch_is_what_the_fixture_writes():
    assert TINY_ARCH.factor == 2


def test_clip_from_a_file_is_built_on_meta_and_matches_the_model_it_came_from(tmp_path):
    from safetensors.torch import save_file

    from pixgen.models.scorer import build_clip, load_clip_file

    source = build_clip("pixgen-tiny", seed=5)
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = load_clip_file("pixgen-tiny", tmp_path / "w.safetensors")
    assert not any(t.is_meta for t in [*loaded.model.parameters(), *loaded.model.buffers()])
    assert torch.equal(loaded.model.attn_mask, source.model.attn_mask)  # the computed causal mask
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.encode_image(images), source.encode_image(images))
    assert torch.equal(loaded.encode_text(["a red circle", "b"]), source.encode_text(["a red circle", "b"]))
    sd = source.model.state_dict()
    sd.pop("logit_scale")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(PixgenError, match="1 missing"):
        load_clip_file("pixgen-tiny", tmp_path / "bad.safetensors")


def test_every_missing_model_is_reported_at_once_with_one_command(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    code, _, err = cli(
        "a cat", "--offline", "--vqgan", "wikiart_16384", "--clip", "ViT-B-32:openai", "--clip", "ViT-B-16:openai",
        "-o", tmp_path / "o",
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()  # one line, naming all three
    assert "3 model(s)" in line and "offline" in line
    assert "pixgen models download wikiart_16384 ViT-B-32:openai ViT-B-16:openai" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_vqgan_aliases_reach_the_same_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    assert weights.canonical_vqgan("vqgan_wikiart_16384") == "wikiart_16384"
    assert weights.canonical_vqgan("imagenet_f16_16384") == "vqgan_imagenet_f16_16384"
    assert weights.canonical_vqgan("wikiart_16384") == "wikiart_16384"  # old names keep working
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    with pytest.raises(PixgenError, match="vqgan/wikiart_16384/model.yaml"):
        weights.ensure_vqgan("vqgan_wikiart_16384")
    (tmp_path / "cache" / "vqgan" / "vqgan_coco").mkdir(parents=True)  # a model imported under that name
    assert weights.canonical_vqgan("vqgan_coco") == "vqgan_coco"


def test_models_list_shows_aliases_built_ins_and_clip_tags(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("models", "list")
    assert code == 0 and "vqgan_wikiart_16384" in out and "tiny" in out and "shapes" in out
    code, out, _ = cli("models", "list", "--clip")
    assert code == 0 and "ViT-B-32:openai" in out and "ViT-B-16:laion2b_s34b_b88k" in out
    assert "yes" not in out  # nothing is cached in an empty cache


def test_models_download_defaults_offline_names_both(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    code, _, err = cli("models", "download", "--defaults", "--offline")
    assert code == 2 and "2 of 2" in err and "vqgan_imagenet_f16_16384" in err and "ViT-B-32:openai" in err
    code, _, err = cli("models", "download")
    assert code == 2 and "--defaults" in err


def test_output_dir_named_like_an_image_is_explained(cli, tmp_path):
    code, _, err = cli("a cat", "--preset", "smoke", "-i", "1", "-o", tmp_path / "out.png")
    assert code == 0, err
    assert "created folder" in err and "out.png/<run>/final.png" in err
    assert (tmp_path / "out.png").is_dir()


def test_a_cast_on_loading_gives_the_same_values_chunk_by_chunk(tmp_path, monkeypatch):
    """Tensors cast on loading are read a few rows at a time into their new storage: the same
    values as a whole read and a cast, whatever the chunk's size against the rows."""
    from pixgen import weights_io

    g = torch.Generator().manual_seed(0)
    tensors = {
        "matrix": torch.randn(37, 5, generator=g).half(),
        "cube": torch.randn(9, 4, 3, generator=g).half(),
        "vector": torch.randn(11, generator=g).half(),
        "scalar": torch.tensor(2.5).half(),
        "index": torch.arange(7),
        "same": torch.randn(6, 2, generator=g).bfloat16(),
    }
    path = tmp_path / "w.safetensors"
    weights_io.write(path, tensors)
    monkeypatch.setattr(weights_io, "_CHUNK_BYTES", 24)  # 2-3 rows of "matrix" at a time, 1 of "cube"
    got = weights_io.read_tensors(path, torch.bfloat16)
    for key, value in tensors.items():
        assert got[key].dtype == torch.bfloat16 and torch.equal(got[key], value.to(torch.bfloat16)), key


def test_a_cast_on_loading_never_holds_a_second_copy(tmp_path):
    """A 64 MB fp16 tensor read into bf16 raises the process's peak by its bf16 size and a chunk,
    not by both copies (issue 32: the 1.4B prior's loading left 360 MB beside its weights)."""
    import subprocess
    import sys

    from pixgen import weights_io

    path, small = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    weights_io.write(path, {"w": torch.zeros(4096, 8192, dtype=torch.float16)})
    weights_io.write(small, {"w": torch.zeros(4096, 64, dtype=torch.float16)})
    code = (
        "import sys, torch; from pixgen import weights_io\n"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024\n"
        "weights_io.read_tensors(sys.argv[1], torch.bfloat16); before = hwm()  # the kernels' first use\n"
        "t = weights_io.read_tensors(sys.argv[2], torch.bfloat16)['w']\n"
        "print(hwm() - before, t.dtype)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, small, path], capture_output=True, text=True, check=True)
    grew, dtype = done.stdout.split()
    assert dtype == "torch.bfloat16" and int(grew) < 64 + 24, done.stdout
