"""Serving throughput and latency: ragtune's continuous-batching engine vs the plain recipe.

Both servers run the same model (the embedded SmolLM2-135M-Instruct unless --model), each in
its own process under a real uvicorn on loopback, and both answer `GET /generate?prompt=`
and `POST /chat` (plain) / `POST /v1/chat/completions` (ragtune) with chat messages:

- plain:   the recipe users start from, an `async def` route that calls `model.generate`
           directly (so requests run one at a time, on the event loop);
- ragtune: `api.app.create_app` with the continuous-batching `TransformersGenerator`.

Three workloads in one run, each on plain then ragtune back to back (less drift):
1. closed loop: 1, 4, 16 clients (`--levels`) of greedy short prompts, a fixed token budget;
2. staggered arrivals: `--poisson-requests` requests with exponential gaps at a mean rate
   that saturates the plain recipe (`--poisson-rate`, default 1.5x the plain one-client
   request rate measured in 1.); ragtune's are streamed, so time-to-first-token is measured
   (plain cannot stream: its TTFT is its latency);
3. RAG prompts: the serving prompt (system prompt + 4 passages, English and Chinese
   alternating) from `--rag-clients` closed-loop clients.
Completion tokens are counted client-side with the model's tokenizer for both servers.
Goals (issue 13): 16 clients >= 10x plain, 1 client >= 3x plain, Poisson p95 <= 1.5x p50.

`--sweep 4,8,16,32` measures the `max_batch_size` default instead: the plain recipe once at the
largest level, then one ragtune server per batch size through the closed-loop levels, each
ratio against that plain figure (the plain recipe serves one request at a time, so its
throughput does not depend on the level).

    .venv/bin/python bench/bench_serve.py                  # defaults, several minutes on CPU
    .venv/bin/python bench/bench_serve.py --threads 1      # a busy shared machine
    .venv/bin/python bench/bench_serve.py --levels 1,2 --requests 1 --max-new-tokens 8 \
        --poisson-requests 4 --rag-clients 2 --rag-requests 1      # a smoke run
    .venv/bin/python bench/bench_serve.py --sweep 4,8,16,32 --levels 8,16,32   # max_batch_size
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


PASSAGES_EN = [
    ("handbook/leave.md", "Leave", "Full-time employees get 27 days of paid annual leave per "
     "calendar year; part-time staff get a pro-rata share. Unused days carry over until March."),
    ("handbook/expenses.md", "Expenses", "Expense reports must be filed within 30 days of "
     "travel, with receipts for every item above 25 euros, through the finance portal."),
    ("ops/safety.md", "Safety", "The Northwind reactor is inspected under safety policy 7 every "
     "quarter; inspection reports are archived for ten years by the operations team."),
    ("it/security.md", "Passwords", "Passwords need at least 14 characters and are rotated "
     "only after a suspected compromise; the password manager is mandatory for shared accounts."),
]
PASSAGES_ZH = [
    ("handbook/leave-zh.md", "年假",
     "全职员工每个日历年享有二十七天带薪年假，兼职员工按比例享有。未休假期可顺延至次年三月。"),
    ("handbook/expenses-zh.md", "报销",
     "差旅报销必须在出差结束后三十天内通过财务系统提交，超过二十五欧元的项目需附收据。"),
    ("ops/safety-zh.md", "安全",
     "北风反应堆每季度按照第七号安全规定接受检查，检查报告由运营团队存档十年。"),
    ("it/security-zh.md", "密码",
     "密码至少需要十四个字符，只有在怀疑泄露时才需更换；共享账户必须使用密码管理器。"),
]
QUESTIONS = [("How many days of annual leave do full-time employees get?", PASSAGES_EN),
             ("全职员工每年有多少天年假？", PASSAGES_ZH),
             ("Within how many days must expense reports be filed?", PASSAGES_EN),
             ("反应堆多久检查一次？", PASSAGES_ZH)]


def rag_messages(i: int) -> list[dict]:
    """The serving prompt of `/ask` for question i: system prompt, 4 passages, question."""
    from types import SimpleNamespace

    from ragtune.prompts import build_messages, system_prompt

    question, passages = QUESTIONS[i % len(QUESTIONS)]
    chunks = [SimpleNamespace(source=s, section=h, text=t) for s, h, t in passages]
    return build_messages(question, chunks, system_prompt())  # type: ignore[arg-type]


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

    @app.post("/chat")
    async def chat(body: dict) -> dict:
        inputs = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        outputs = model.generate(**inputs, max_new_tokens=body.get("max_tokens", 32),
                                 do_sample=False)
        text = tokenizer.decode(outputs[0][inputs["input_ids"].shape[1]:],
                                skip_special_tokens=True)
        return {"choices": [{"message": {"content": text}}]}

    return app


def ragtune_app(model_dir: str, max_batch: int):
    """ragtune's app on the same model: dynamic batching engine, no retrieval."""
    from api.app import create_app
    from serving.config import EngineConfig
    from serving.engine import TransformersGenerator
    from ragtune.settings import load_settings

    engine = TransformersGenerator.load(model_dir, config=EngineConfig(
        device="cpu", max_batch_size=max_batch, max_queue=256, request_timeout_s=3600,
        repeat_guard_tokens=0))  # the same token budget as the plain recipe
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
def summary(latencies: list[float], tokens: int, wall: float, **extra: float) -> dict:
    return {"tok_s": tokens / wall, "p50": statistics.median(latencies),
            "p95": percentile(latencies, 0.95), "tokens": tokens, "wall": wall, **extra}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ask_short(http, url: str, kind: str, i: int, max_new_tokens: int) -> str:
    params = {"prompt": prompt_for(i), "max_new_tokens": max_new_tokens}
    resp = await http.get(f"{url}/generate", params=params)
    resp.raise_for_status()
    return resp.json()["generated_text"]


async def ask_rag(http, url: str, kind: str, i: int, max_new_tokens: int) -> str:
    body = {"messages": rag_messages(i), "max_tokens": max_new_tokens, "model": "base"}
    resp = await http.post(f"{url}/chat" if kind == "plain" else f"{url}/v1/chat/completions",
                           json=body)
    resp.raise_for_status()
    return resp.json()["choices"][0]["message"]["content"]


async def ask_streamed(http, url: str, i: int, max_new_tokens: int) -> tuple[str, float]:
    """A streamed chat completion: its text and seconds to the first content delta."""
    import json

    body = {"messages": [{"role": "user", "content": prompt_for(i)}], "stream": True,
            "max_tokens": max_new_tokens}
    t0, first, parts = time.perf_counter(), None, []
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            delta = choices[0].get("delta", {}).get("content")
            if delta:
                first = first if first is not None else time.perf_counter() - t0
                parts.append(delta)
    return "".join(parts), first if first is not None else time.perf_counter() - t0


async def load(url: str, kind: str, clients: int, requests: int, max_new_tokens: int,
               count, ask=ask_short) -> dict[str, float]:
    """`clients` closed-loop clients, `requests` each; aggregate tokens/s and latency."""
    import httpx

    latencies: list[float] = []
    tokens = 0

    async def client(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for r in range(requests):
            t0 = time.perf_counter()
            text = await ask(http, url, kind, cid * requests + r, max_new_tokens)
            latencies.append(time.perf_counter() - t0)
            tokens += count(text)

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - started
    return summary(latencies, tokens, wall)


async def poisson(url: str, kind: str, n: int, rate: float, max_new_tokens: int,
                  count) -> dict[str, float]:
    """`n` requests arriving with exponential gaps (mean 1/rate s, seeded): latency and, for
    ragtune's streamed requests, time to first token (plain: its whole latency)."""
    import random

    import httpx

    rng = random.Random(13)
    starts = [0.0]
    for _ in range(n - 1):
        starts.append(starts[-1] + rng.expovariate(rate))
    latencies, ttfts, tokens = [], [], 0
    spans: list[tuple[float, float, int]] = []  # (start, end, tokens) per request

    async def one(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        await asyncio.sleep(starts[i])
        t0 = time.perf_counter()
        if kind == "plain":
            text = await ask_short(http, url, kind, i, max_new_tokens)
            ttft = time.perf_counter() - t0
        else:
            text, ttft = await ask_streamed(http, url, i, max_new_tokens)
        end, k = time.perf_counter(), count(text)  # one tokenization per answer
        latencies.append(end - t0)
        ttfts.append(ttft)
        tokens += k
        spans.append((t0, end, k))

    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=n + 4)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(one(i, http) for i in range(n)))
        wall = time.perf_counter() - started
    per_token = [(end - t0) / max(1, k) for t0, end, k in spans]
    return summary(latencies, tokens, wall, ttft50=statistics.median(ttfts),
                   ttft95=percentile(ttfts, 0.95), norm50=statistics.median(per_token),
                   norm95=percentile(per_token, 0.95), overlap=overlaps(spans))


def overlaps(spans: list[tuple[float, float, int]]) -> str:
    """The slowest requests: latency, tokens, and how many others were in flight with them
    (what explains a p95 far above the p50: company, or a longer answer)."""
    worst = sorted(spans, key=lambda s: s[1] - s[0], reverse=True)[:3]
    return ", ".join(
        f"{end - t0:.2f} s/{k} tok with {sum(1 for a, b, _ in spans if a < end and b > t0) - 1}"
        for t0, end, k in worst)


def per_client(level: int, args: argparse.Namespace) -> int:
    """Requests per client: `--requests`, but at least 4 samples per level in all."""
    return max(args.requests, -(-4 // level))


def report(kind: str, label: str, r: dict) -> None:
    ttft = f"  TTFT p50 {r['ttft50']:5.2f} s p95 {r['ttft95']:5.2f} s" if "ttft50" in r else ""
    if "norm50" in r:
        ttft += (f"  s/token p50 {r['norm50']:.3f} p95 {r['norm95']:.3f}; slowest: "
                 f"{r['overlap']}")
    print(f"  {kind:7} {label:>14}: {r['tok_s']:6.1f} tok/s  p50 {r['p50']:6.2f} s"
          f"  p95 {r['p95']:6.2f} s{ttft}  ({r['tokens']:.0f} tokens in {r['wall']:.1f} s)",
          flush=True)


def measure(model_dir: str, args: argparse.Namespace, count) -> dict[str, dict]:
    """Both servers up; each workload runs on plain then ragtune back to back (less drift)."""
    servers = {kind: start(kind, model_dir, args) for kind in ("plain", "ragtune")}
    results: dict[str, dict] = {"plain": {}, "ragtune": {}}
    n = args.max_new_tokens
    try:
        for kind, (_, url) in servers.items():
            asyncio.run(load(url, kind, 1, 1, n, count))  # warm-up
        for level in args.levels:
            for kind, (_, url) in servers.items():
                r = asyncio.run(load(url, kind, level, per_client(level, args), n, count))
                results[kind][level] = r
                report(kind, f"{level} clients", r)
        one = results["plain"][min(args.levels)]
        rate = args.poisson_rate or 1.5 / one["p50"]
        for kind, (_, url) in servers.items():
            r = asyncio.run(poisson(url, kind, args.poisson_requests, rate, n, count))
            results[kind]["poisson"] = r
            report(kind, f"Poisson {rate:.2f}/s", r)
        for kind, (_, url) in servers.items():
            r = asyncio.run(load(url, kind, args.rag_clients, args.rag_requests, n, count,
                                 ask=ask_rag))
            results[kind]["rag"] = r
            report(kind, f"RAG x{args.rag_clients}", r)
        results["rate"] = rate
        return results
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def sweep(model_dir: str, args: argparse.Namespace, count) -> None:
    """Closed-loop throughput and latency of ragtune per `max_batch_size` (see the docstring)."""
    n, top = args.max_new_tokens, max(args.levels)
    proc, url = start("plain", model_dir, args)
    try:
        asyncio.run(load(url, "plain", 1, 1, n, count))  # warm-up
        plain = asyncio.run(load(url, "plain", top, per_client(top, args), n, count))
        report("plain", f"{top} clients", plain)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = []
    for batch in args.sweep:
        proc, url = start("ragtune", model_dir, argparse.Namespace(**{**vars(args),
                                                                      "max_batch": batch}))
        try:
            asyncio.run(load(url, "ragtune", 1, 1, n, count))  # warm-up
            for level in args.levels:
                r = asyncio.run(load(url, "ragtune", level, per_client(level, args), n, count))
                report("ragtune", f"b{batch} {level} cl", r)
                rows.append((batch, level, r))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\nmax_batch_size | clients | ragtune tok/s | x plain ({plain['tok_s']:.1f} tok/s) "
          "| p50 / p95 s")
    for batch, level, r in rows:
        print(f"{batch:14} | {level:7} | {r['tok_s']:13.1f} | {r['tok_s'] / plain['tok_s']:8.2f} "
              f"| {r['p50']:.2f} / {r['p95']:.2f}")


def table(args: argparse.Namespace, measured: dict) -> None:
    plain, ours = measured["plain"], measured["ragtune"]
    print("\nworkload | plain tok/s | ragtune tok/s | throughput x | plain p50/p95 s | "
          "ragtune p50/p95 s | ragtune TTFT p50/p95 s")
    for key in [*args.levels, "poisson", "rag"]:
        p, r = plain[key], ours[key]
        label = f"{key} clients" if isinstance(key, int) else key
        ttft = f"{r['ttft50']:.2f} / {r['ttft95']:.2f}" if "ttft50" in r else "-"
        print(f"{label:>10} | {p['tok_s']:11.1f} | {r['tok_s']:13.1f} | "
              f"{r['tok_s'] / p['tok_s']:12.2f} | {p['p50']:6.2f} / {p['p95']:6.2f} | "
              f"{r['p50']:7.2f} / {r['p95']:7.2f} | {ttft}")
    top, one = max(args.levels), min(args.levels)
    poi = ours["poisson"]
    print(f"\nthroughput at {top} clients: {ours[top]['tok_s'] / plain[top]['tok_s']:.2f}x the "
          f"plain recipe (goal >= 10x); at {one} client: "
          f"{ours[one]['tok_s'] / plain[one]['tok_s']:.2f}x (goal >= 3x); Poisson "
          f"({measured['rate']:.2f} req/s) p95/p50: {poi['p95'] / poi['p50']:.2f} (goal <= 1.5; "
          f"per output token {poi['norm95'] / poi['norm50']:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model dir (default: embedded SmolLM2)")
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=1,
                        help="requests per client per level (at least 4 per level in all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16, help="ragtune max_batch_size")
    parser.add_argument("--sweep", default="",
                        help="max_batch_size values to compare (comma-separated), see above")
    parser.add_argument("--poisson-requests", type=int, default=24)
    parser.add_argument("--poisson-rate", type=float, default=0.0,
                        help="mean arrivals/s (0: 1.5x the plain one-client request rate)")
    parser.add_argument("--rag-clients", type=int, default=4)
    parser.add_argument("--rag-requests", type=int, default=2, help="RAG requests per client")
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
    if args.sweep:
        args.sweep = [int(x) for x in args.sweep.split(",")]
        sweep(args.model, args, count)
        return 0
    measured = measure(args.model, args, count)
    table(args, measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
