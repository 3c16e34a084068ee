"""Token-level serving metrics in the Prometheus text exposition format (no dependency)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.engines.base import Completion
from agent.runtime import ModelRuntime

PREFIX = "edgefleet_agent"
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# vLLM's request_queue_time_seconds and e2e_request_latency_seconds, at our device's scale
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    """Cumulative buckets, a sum and a count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        """The `_bucket`, `_sum` and `_count` samples."""
        out: list[str] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts[:-1], strict=True):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        running += self.counts[-1]
        out.append(f'{name}_bucket{{le="+Inf"}} {running}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {running}")
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class ServingTotals:
    """Cumulative counters at one moment; two of them give a window's rates."""

    generated_tokens: int = 0
    token_gaps: int = 0
    token_gap_seconds: float = 0.0
    first_tokens: int = 0
    first_token_seconds: float = 0.0
    requests: int = 0
    server_errors: int = 0
    queued: int = 0
    queue_seconds: float = 0.0


class ServingMetrics:
    """Counters fed by the runtime's worker threads and the routes; rendered on /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.requests: dict[tuple[str, str], int] = {}
        self.finish_reasons: dict[str, int] = {}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.queue_time = Histogram(QUEUE_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.load_seconds = Histogram((0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        # Fleet mode adds its own samples (outbox, MQTT): (name, type, help, value) each.
        self.extra: Callable[[], list[tuple[str, str, str, float]]] | None = None
        self.last_load_seconds = 0.0

    def on_load(self, seconds: float) -> None:
        """A model finished loading."""
        with self._lock:
            self.load_seconds.observe(seconds)
            self.last_load_seconds = seconds

    def on_first_token(self, seconds: float) -> None:
        """Time to first token of one request."""
        self._observe(self.ttft, seconds)

    def on_token_gap(self, seconds: float) -> None:
        """Inter-token latency."""
        self._observe(self.itl, seconds)

    def on_queued(self, seconds: float) -> None:
        """Seconds a request waited for a slot."""
        self._observe(self.queue_time, seconds)

    def on_request_done(self, seconds: float) -> None:
        """Arrival to end of one request."""
        self._observe(self.e2e, seconds)

    def _observe(self, histogram: Histogram, seconds: float) -> None:
        """One observation, under the lock the worker threads and /metrics share."""
        with self._lock:
            histogram.observe(seconds)

    def on_finish(self, completion: Completion) -> None:
        """Token counts of a finished generation."""
        with self._lock:
            self.prompt_tokens += completion.prompt_tokens
            self.generated_tokens += completion.completion_tokens
            reason = completion.finish_reason
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1

    def count_request(self, api: str, status: int) -> None:
        """One answered request, by API family and HTTP status."""
        key = (api, str(status))
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def totals(self) -> ServingTotals:
        """A consistent snapshot of the cumulative counters."""
        with self._lock:
            return ServingTotals(
                generated_tokens=self.generated_tokens,
                token_gaps=sum(self.itl.counts),
                token_gap_seconds=self.itl.total,
                first_tokens=sum(self.ttft.counts),
                first_token_seconds=self.ttft.total,
                requests=sum(self.requests.values()),
                server_errors=sum(n for (_, code), n in self.requests.items() if code >= "500"),
                queued=sum(self.queue_time.counts),
                queue_seconds=self.queue_time.total,
            )

    def render(self, runtime: ModelRuntime) -> str:
        """The exposition text."""
        p = PREFIX
        active = runtime.active
        with self._lock:
            lines = [
                f"# HELP {p}_prompt_tokens_total Prompt tokens processed.",
                f"# TYPE {p}_prompt_tokens_total counter",
                f"{p}_prompt_tokens_total {self.prompt_tokens}",
                f"# HELP {p}_generation_tokens_total Tokens generated.",
                f"# TYPE {p}_generation_tokens_total counter",
                f"{p}_generation_tokens_total {self.generated_tokens}",
                f"# HELP {p}_requests_total Requests answered, by API and HTTP status.",
                f"# TYPE {p}_requests_total counter",
                *(
                    f'{p}_requests_total{{api="{a}",code="{c}"}} {n}'
                    for (a, c), n in sorted(self.requests.items())
                ),
                f"# HELP {p}_generations_finished_total Generations ended, by finish reason.",
                f"# TYPE {p}_generations_finished_total counter",
                *(
                    f'{p}_generations_finished_total{{reason="{r}"}} {n}'
                    for r, n in sorted(self.finish_reasons.items())
                ),
                f"# HELP {p}_time_to_first_token_seconds Request arrival to first token.",
                f"# TYPE {p}_time_to_first_token_seconds histogram",
                *self.ttft.lines(f"{p}_time_to_first_token_seconds"),
                f"# HELP {p}_inter_token_latency_seconds Time between consecutive tokens.",
                f"# TYPE {p}_inter_token_latency_seconds histogram",
                *self.itl.lines(f"{p}_inter_token_latency_seconds"),
                f"# HELP {p}_request_queue_time_seconds Time a request waited for a slot.",
                f"# TYPE {p}_request_queue_time_seconds histogram",
                *self.queue_time.lines(f"{p}_request_queue_time_seconds"),
                f"# HELP {p}_e2e_request_latency_seconds Request arrival to its end.",
                f"# TYPE {p}_e2e_request_latency_seconds histogram",
                *self.e2e.lines(f"{p}_e2e_request_latency_seconds"),
                f"# HELP {p}_model_load_seconds Model load durations.",
                f"# TYPE {p}_model_load_seconds histogram",
                *self.load_seconds.lines(f"{p}_model_load_seconds"),
            ]
        lines += [
            f"# HELP {p}_requests_running Generations running now.",
            f"# TYPE {p}_requests_running gauge",
            f"{p}_requests_running {runtime.running}",
            f"# HELP {p}_requests_waiting Requests queued for a generation slot.",
            f"# TYPE {p}_requests_waiting gauge",
            f"{p}_requests_waiting {runtime.waiting}",
            *_batch_lines(runtime),
            f"# HELP {p}_model_loaded The active model (1) with its variant and engine.",
            f"# TYPE {p}_model_loaded gauge",
        ]
        if active is not None:
            lines.append(
                f'{p}_model_loaded{{model="{_label(active.ref)}",variant="{_label(active.variant_id)}"'
                f',engine="{_label(active.engine_name)}",device="{_label(active.device)}"}} 1'
            )
            lines += [
                f"# HELP {p}_active_model_load_seconds Load time of the active model.",
                f"# TYPE {p}_active_model_load_seconds gauge",
                f"{p}_active_model_load_seconds {active.load_seconds:.6f}",
            ]
        for name, kind, text, value in self.extra() if self.extra is not None else []:
            lines += _single_sample(name, kind, text, value)
        return "\n".join(lines) + "\n"


def _single_sample(name: str, kind: str, text: str, value: object) -> list[str]:
    """A metric family of one unlabelled sample: its HELP, TYPE and sample lines."""
    return [
        f"# HELP {PREFIX}_{name} {text}",
        f"# TYPE {PREFIX}_{name} {kind}",
        f"{PREFIX}_{name} {value}",
    ]


def _batch_lines(runtime: ModelRuntime) -> list[str]:
    """vLLM's scheduler gauges and prefix-cache counters (batching engines; zeros otherwise)."""
    batch = runtime.batch_stats()
    # A one-at-a-time engine runs one sequence in one slot and has no KV or prefix cache.
    slots, sequences, tokens, kv_usage, queries, hits = (
        (1, 0, 0, 0.0, 0, 0)
        if batch is None
        else (
            batch.slots,
            batch.batch_sequences,
            batch.batch_tokens,
            round(batch.kv_usage, 4),
            batch.prompt_tokens,
            batch.prefix_hit_tokens,
        )
    )
    samples = (
        ("num_requests_running", "gauge", "Sequences in a slot now.", runtime.running),
        ("num_requests_waiting", "gauge", "Requests waiting for a slot.", runtime.waiting),
        ("num_slots", "gauge", "Sequences the engine runs at once (--parallel).", slots),
        ("batch_size", "gauge", "Sequences in the last model step.", sequences),
        ("iteration_tokens", "gauge", "Tokens in the last model step.", tokens),
        (
            "kv_cache_usage_perc",
            "gauge",
            "Estimated share of KV cache cells in use (0-1).",
            kv_usage,
        ),
        (
            "prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            queries,
        ),
        ("prefix_cache_hits_total", "counter", "Prompt tokens taken from the prefix cache.", hits),
    )
    return [line for sample in samples for line in _single_sample(*sample)]
