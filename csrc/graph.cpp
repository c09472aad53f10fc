// relaxflow's CUDA graphs (see native.h): at::cuda::CUDAGraph captured on a side stream and replayed. Compiled with
// CUDA's headers only under the cargo feature `cuda-graphs` (RELAXFLOW_CUDA_GRAPHS); without it every call but
// rf_graph_available answers RF_NATIVE_UNSUPPORTED, and callers run their code eagerly instead.
#include "native_util.hpp"

#ifdef RELAXFLOW_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

struct rf_graph {
  explicit rf_graph(int32_t d) : device(d) {}
  at::cuda::CUDAGraph graph;
  // The side stream the capture runs on (CUDA cannot capture the default stream), current while capturing.
  std::optional<c10::cuda::CUDAStreamGuard> stream;
  int32_t device;
};
#else
struct rf_graph {
  int32_t device;
};
#endif

using rf_native::guarded;
using rf_native::Invalid;

namespace {

#ifndef RELAXFLOW_CUDA_GRAPHS
struct Unsupported {};
rf_native_status unsupported(char **err) {
  return rf_native::fail(err, RF_NATIVE_UNSUPPORTED,
                         "CUDA graphs are not in this build (cargo feature `cuda-graphs`, which needs CUDA's headers: "
                         "`make nccl-headers`)");
}
#endif

rf_graph *need(rf_graph *g) {
  if (g == nullptr) throw Invalid{"graph is null"};
  return g;
}

}  // namespace

extern "C" {

int32_t rf_graph_available(void) {
#ifdef RELAXFLOW_CUDA_GRAPHS
  return 1;
#else
  return 0;
#endif
}

rf_native_status rf_graph_new(int32_t device, rf_graph **out, char **err) {
#ifdef RELAXFLOW_CUDA_GRAPHS
  return guarded(err, [&] {
    if (out == nullptr) throw Invalid{"out is null"};
    if (device < 0 || device >= static_cast<int32_t>(c10::cuda::device_count()))
      throw Invalid{"no CUDA device " + std::to_string(device) + " (" + std::to_string(c10::cuda::device_count()) +
                    " visible)"};
    *out = new rf_graph(device);
  });
#else
  (void)device;
  if (out != nullptr) *out = nullptr;
  return unsupported(err);
#endif
}

rf_native_status rf_graph_capture_begin(rf_graph *g, char **err) {
#ifdef RELAXFLOW_CUDA_GRAPHS
  return guarded(err, [&] {
    need(g);
    if (g->stream) throw Invalid{"a capture is already open on this graph"};
    // As torch.cuda.graph: wait for queued work, then capture on a stream from the pool.
    c10::cuda::device_synchronize();
    g->stream.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(g->device)));
    try {
      g->graph.capture_begin();
    } catch (...) {
      g->stream.reset();
      throw;
    }
  });
#else
  (void)g;
  return unsupported(err);
#endif
}

rf_native_status rf_graph_capture_end(rf_graph *g, char **err) {
#ifdef RELAXFLOW_CUDA_GRAPHS
  return guarded(err, [&] {
    need(g);
    if (!g->stream) throw Invalid{"no capture is open on this graph"};
    try {
      g->graph.capture_end();
    } catch (...) {
      g->stream.reset();
      throw;
    }
    g->stream.reset();
  });
#else
  (void)g;
  return unsupported(err);
#endif
}

rf_native_status rf_graph_replay(rf_graph *g, char **err) {
#ifdef RELAXFLOW_CUDA_GRAPHS
  return guarded(err, [&] { need(g)->graph.replay(); });
#else
  (void)g;
  return unsupported(err);
#endif
}

void rf_graph_free(rf_graph *g) { delete g; }

}  // extern "C"
