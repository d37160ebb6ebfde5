"""Serving throughput and latency: ragtune's batching engine vs the plain FastAPI recipe.

Both servers run the same model (the embedded SmolLM2-135M-Instruct unless --model), each in
its own process under a real uvicorn on loopback, and both answer `GET /generate?prompt=`:

- plain:   the recipe users start from, an `async def` route that calls `model.generate`
           directly (so requests run one at a time, on the event loop);
- ragtune: `api.app.create_app` with the dynamic-batching `TransformersGenerator`.

Closed-loop clients (1, 4, 16 by default) send greedy requests with a fixed token budget;
completion tokens are counted client-side with the model's tokenizer for both servers.
Prints aggregate tokens/s, p50/p95 latency and ragtune/plain ratios. Goal: >= 4x throughput
at 16 clients and no worse latency at 1.

    .venv/bin/python bench/bench_serve.py                  # defaults, a few minutes on CPU
    .venv/bin/python bench/bench_serve.py --threads 1      # a busy shared machine
    .venv/bin/python bench/bench_serve.py --levels 1,4,16 --max-new-tokens 32 --requests 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = ["annual leave", "expense reports", "fire drills", "password rules", "remote work",
          "onboarding", "travel booking", "sick leave", "laptop security", "code review",
          "meeting etiquette", "customer data", "parental leave", "office hours", "backups",
          "incident response"]


def prompt_for(i: int) -> str:
    return f"Give me three short tips about {TOPICS[i % len(TOPICS)]} at work."


# ----------------------------------------------------------------------------------- servers
def plain_app(model_dir: str):
    """The plain transformers + FastAPI recipe: generate on the event loop, one at a time."""
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    app = FastAPI()

    @app.get("/generate")
    async def generate(prompt: str, max_new_tokens: int = 32) -> dict:
        messages = [{"role": "user", "content": prompt}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        outputs = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        text = tokenizer.decode(outputs[0][inputs["input_ids"].shape[1]:],
                                skip_special_tokens=True)
        return {"generated_text": text}

    return app


def ragtune_app(model_dir: str, max_batch: int):
    """ragtune's app on the same model: dynamic batching engine, no retrieval."""
    from api.app import create_app
    from serving.config import EngineConfig
    from serving.engine import TransformersGenerator
    from ragtune.settings import load_settings

    engine = TransformersGenerator.load(model_dir, config=EngineConfig(
        device="cpu", max_batch_size=max_batch, max_queue=256, request_timeout_s=3600))
    settings = load_settings(workspace=Path(tempfile.mkdtemp(prefix="bench-serve-")),
                             request_timeout_s=3600, max_queue=256)
    return create_app(settings, generator=engine)


def serve(kind: str, model_dir: str, max_batch: int, threads: int) -> None:
    """Child process: run one server on a free loopback port and print `PORT <n>`."""
    import torch
    import uvicorn

    if threads > 0:
        torch.set_num_threads(threads)
    from api.commands import uvicorn_config

    app = plain_app(model_dir) if kind == "plain" else ragtune_app(model_dir, max_batch)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0, "warning"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        print(f"PORT {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
        await task

    asyncio.run(run())


def start(kind: str, model_dir: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, __file__, "--serve", kind, "--model", model_dir,
           "--max-batch", str(args.max_batch), "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    for line in proc.stdout or ():
        if line.startswith("PORT "):
            return proc, f"http://127.0.0.1:{int(line.split()[1])}"
    raise RuntimeError(f"{kind} server did not start (exit code {proc.wait()})")


# ------------------------------------------------------------------------------------ load
async def load(url: str, clients: int, requests: int, max_new_tokens: int,
               count) -> dict[str, float]:
    """`clients` closed-loop clients, `requests` each; aggregate tokens/s and latency."""
    import httpx

    latencies: list[float] = []
    tokens = 0

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for r in range(requests):
            params = {"prompt": prompt_for(cid * requests + r), "max_new_tokens": max_new_tokens}
            t0 = time.perf_counter()
            resp = await http.get(f"{url}/generate", params=params)
            latencies.append(time.perf_counter() - t0)
            resp.raise_for_status()
            tokens += count(resp.json()["generated_text"])

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return {"tok_s": tokens / wall, "p50": statistics.median(latencies), "p95": p95,
            "tokens": tokens, "wall": wall}


def per_client(level: int, args: argparse.Namespace) -> int:
    """Requests per client: `--requests`, but at least 4 samples per level in all."""
    return max(args.requests, -(-4 // level))


def report(kind: str, level: int, r: dict) -> None:
    print(f"  {kind:7} {level:2} clients: {r['tok_s']:6.1f} tok/s  p50 {r['p50']:6.2f} s"
          f"  p95 {r['p95']:6.2f} s  ({r['tokens']:.0f} tokens in {r['wall']:.1f} s)", flush=True)


def measure(model_dir: str, args: argparse.Namespace, count) -> dict[str, dict[int, dict]]:
    """Both servers up; each level runs on plain then ragtune back to back (less drift)."""
    servers = {kind: start(kind, model_dir, args) for kind in ("plain", "ragtune")}
    results: dict[str, dict[int, dict]] = {"plain": {}, "ragtune": {}}
    try:
        for _, url in servers.values():
            asyncio.run(load(url, 1, 1, args.max_new_tokens, count))  # warm-up
        for level in args.levels:
            for kind, (_, url) in servers.items():
                r = asyncio.run(load(url, level, per_client(level, args),
                                     args.max_new_tokens, count))
                results[kind][level] = r
                report(kind, level, r)
        return results
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model dir (default: embedded SmolLM2)")
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=1,
                        help="requests per client per level (at least 4 per level in all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16, help="ragtune max_batch_size")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in both servers (0: torch's default)")
    parser.add_argument("--serve", choices=["plain", "ragtune"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.model, args.max_batch, args.threads)
        return 0
    args.levels = [int(x) for x in args.levels.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.model is None:
        from ragtune.models import embedded_generator_dir

        args.model = str(embedded_generator_dir(REPO / ".cache" / "test-models")[0])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    print(f"model {args.model}, {args.max_new_tokens} new tokens, greedy, levels {args.levels}, "
          f"ragtune max_batch_size {args.max_batch}, torch threads "
          f"{args.threads or 'default'}", flush=True)
    measured = measure(args.model, args, count)
    plain, ours = measured["plain"], measured["ragtune"]
    print("\nclients | plain tok/s | ragtune tok/s | throughput x | plain p50/p95 s | "
          "ragtune p50/p95 s | p50 x")
    for level in args.levels:
        p, r = plain[level], ours[level]
        print(f"{level:7} | {p['tok_s']:11.1f} | {r['tok_s']:13.1f} | {r['tok_s'] / p['tok_s']:12.2f}"
              f" | {p['p50']:6.2f} / {p['p95']:6.2f} | {r['p50']:7.2f} / {r['p95']:7.2f} |"
              f" {r['p50'] / p['p50']:5.2f}")
    top, one = max(args.levels), min(args.levels)
    print(f"\nthroughput at {top} clients: {ours[top]['tok_s'] / plain[top]['tok_s']:.2f}x the "
          f"plain recipe (goal >= 4x); p50 latency at {one} client: "
          f"{ours[one]['p50'] / plain[one]['p50']:.2f}x (goal <= 1.0x, within noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
