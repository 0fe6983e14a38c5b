"""A local OTLP receiver for the tests: HTTP/protobuf (`/v1/traces`, `/v1/metrics`) or
gRPC (the collector's TraceService and MetricsService), decoding every request with the
OpenTelemetry protobuf definitions (opentelemetry-proto from PyPI)."""

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from loopback_http import LoopbackHTTPServer
from remote import free_port


def attrs(kvs):
    """OTLP KeyValues as a dict of Python values."""
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind) if kind else None
    return out


class Receiver:
    def __init__(self, protocol="http"):
        self.protocol = protocol
        self.traces = []      # ExportTraceServiceRequest
        self.metrics = []     # ExportMetricsServiceRequest
        self.headers = []     # request headers / metadata, as dicts
        self.fail = False     # answer 503 / UNAVAILABLE
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if protocol == "http":
            self._start_http()
        else:
            self._start_grpc()

    def _start_http(self):
        rx = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if rx.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                with rx.lock:
                    rx.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if self.path == "/v1/traces":
                        m = trace_service_pb2.ExportTraceServiceRequest()
                        m.ParseFromString(body)
                        rx.traces.append(m)
                        resp = trace_service_pb2.ExportTraceServiceResponse()
                    elif self.path == "/v1/metrics":
                        m = metrics_service_pb2.ExportMetricsServiceRequest()
                        m.ParseFromString(body)
                        rx.metrics.append(m)
                        resp = metrics_service_pb2.ExportMetricsServiceResponse()
                    else:
                        self.send_response(404)
                        self.end_headers()
                        return
                out = resp.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = LoopbackHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _start_grpc(self):
        rx = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                if rx.fail:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
                with rx.lock:
                    rx.headers.append(dict(context.invocation_metadata()))
                    rx.traces.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                if rx.fail:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
                with rx.lock:
                    rx.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self):
        if self.protocol == "http":
            self.server.shutdown()
        else:
            self.server.stop(0)

    def spans(self):
        """(resource attributes, scope name, span) for every span received."""
        with self.lock:
            out = []
            for req in self.traces:
                for rs in req.resource_spans:
                    res = attrs(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            out.append((res, ss.scope.name, s))
            return out

    def metric_points(self):
        """{metric name: [(attributes, point)]} over every metrics export (cumulative
        temporality: the last point per attribute set is the total)."""
        with self.lock:
            out = {}
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            kind = m.WhichOneof("data")
                            for p in getattr(m, kind).data_points:
                                out.setdefault(m.name, []).append((attrs(p.attributes), p))
            return out
