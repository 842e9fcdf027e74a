"""Prometheus metrics of the server, in the text exposition format (0.0.4).

Written here rather than with prometheus_client: four metric families, one
process, no registry needed.  Thread-safe: the pool's worker thread records
batch sizes while the event loop records requests.
"""
import threading

#: Latency buckets (seconds) and batch-size buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus histograms expose them."""

    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        for k, b in enumerate(self.buckets):
            if value <= b:
                self.counts[k] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def lines(self, name, labels=""):
        out, acc = [], 0
        sep = "," if labels else ""
        for b, c in zip(self.buckets + (float("inf"),), self.counts):
            acc += c
            le = "+Inf" if b == float("inf") else repr(float(b)) if isinstance(b, float) \
                else str(b)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {acc}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum!r}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


class Metrics:
    """Requests by kind and status, batch sizes, latency by kind, open streams."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = {}                      # (kind, status) -> count
        self.latency = {}                       # kind -> Histogram
        self.batches = Histogram(BATCH_BUCKETS)
        self.open_streams = 0
        self.streams_opened = 0

    def request(self, kind, status, seconds=None):
        with self._lock:
            key = (kind, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                h = self.latency.get(kind)
                if h is None:
                    h = self.latency[kind] = Histogram(LATENCY_BUCKETS)
                h.observe(seconds)

    def batch(self, size, seconds=None):
        with self._lock:
            self.batches.observe(size)

    def stream_opened(self):
        with self._lock:
            self.open_streams += 1
            self.streams_opened += 1

    def stream_closed(self):
        with self._lock:
            self.open_streams -= 1

    def render(self):
        """The exposition text."""
        with self._lock:
            out = ["# HELP fastlstm_requests_total Requests answered, by kind (http: a whole "
                   "run; chunk: a stream's chunk) and status.",
                   "# TYPE fastlstm_requests_total counter"]
            for (kind, status), n in sorted(self.requests.items()):
                out.append(f'fastlstm_requests_total{{kind="{kind}",status="{status}"}} {n}')
            out += ["# HELP fastlstm_request_latency_seconds Time from receiving a request "
                    "or chunk to having its result.",
                    "# TYPE fastlstm_request_latency_seconds histogram"]
            for kind, h in sorted(self.latency.items()):
                out += h.lines("fastlstm_request_latency_seconds", f'kind="{kind}"')
            out += ["# HELP fastlstm_batch_size Chunks per batched call of the stream pool.",
                    "# TYPE fastlstm_batch_size histogram"]
            out += self.batches.lines("fastlstm_batch_size")
            out += ["# HELP fastlstm_open_streams Streams open now.",
                    "# TYPE fastlstm_open_streams gauge",
                    f"fastlstm_open_streams {self.open_streams}",
                    "# HELP fastlstm_streams_opened_total Streams opened since start.",
                    "# TYPE fastlstm_streams_opened_total counter",
                    f"fastlstm_streams_opened_total {self.streams_opened}"]
        return "\n".join(out) + "\n"
