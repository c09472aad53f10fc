// relaxflow's shim over c10d (see dist.h). Only c10d's public classes are used; gloo types stay behind the
// shared_ptrs ProcessGroupGloo keeps, so no gloo code is compiled here (its headers are vendored in third_party/).
#include "dist.h"
#include "shim_errors.hpp"

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/exception.h>
#include <c10/util/Logging.h>
#ifdef RELAXFLOW_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct rf_dist_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

namespace {

using rf_shim::fail;
using rf_shim::Invalid;
using rf_shim::Unsupported;

bool mentions_timeout(const std::string &s) {
  std::string l(s);
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  return l.find("timeout") != std::string::npos || l.find("timed out") != std::string::npos;
}

// Runs `f`, turning every exception into a status and a message (never a C++ backtrace).
template <typename F>
rf_dist_status guarded(char **err, F &&f) {
  if (err != nullptr) *err = nullptr;
  try {
    f();
    return RF_DIST_OK;
  } catch (const Invalid &e) {
    return fail(err, RF_DIST_INVALID, e.msg);
  } catch (const Unsupported &e) {
    return fail(err, RF_DIST_UNSUPPORTED, e.msg);
  } catch (const c10d::TimeoutError &e) {
    return fail(err, RF_DIST_TIMEOUT, e.what_without_backtrace());
  } catch (const c10::Error &e) {
    std::string m = e.what_without_backtrace();
    return fail(err, mentions_timeout(m) ? RF_DIST_TIMEOUT : RF_DIST_ERROR, m);
  } catch (const std::exception &e) {
    std::string m = e.what();
    return fail(err, mentions_timeout(m) ? RF_DIST_TIMEOUT : RF_DIST_ERROR, m);
  } catch (...) {
    return fail(err, RF_DIST_ERROR, "unknown C++ exception in the c10d shim");
  }
}

// While the ranks meet, c10d logs each retry of a client that came before the server (normal at start-up) as a
// warning carrying a full C++ backtrace; the outcome comes back as an error anyway. Those logs are hidden for the
// rendezvous unless the user chose a level with TORCH_CPP_LOG_LEVEL.
struct QuietRendezvous {
  int saved = FLAGS_caffe2_log_level;
  bool active = std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr;
  QuietRendezvous() {
    if (active) FLAGS_caffe2_log_level = 3;  // FATAL only
  }
  ~QuietRendezvous() {
    if (active) FLAGS_caffe2_log_level = saved;
  }
};

void check(bool ok, const std::string &msg) {
  if (!ok) throw Invalid{msg};
}

c10::intrusive_ptr<c10d::Store> make_store(const rf_dist_options &o, std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::Store> store;
  if (o.store_kind == RF_STORE_TCP) {
    check(o.host != nullptr && *o.host != '\0', "TCP store: no host");
    c10d::TCPStoreOptions t;
    t.port = o.port;
    t.isServer = o.serve != 0;
    t.numWorkers = static_cast<std::size_t>(o.world_size);
    t.waitWorkers = true;  // clients count toward the join only then
    t.multiTenant = true;
    t.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(std::string(o.host), t);
  } else if (o.store_kind == RF_STORE_FILE) {
    check(o.path != nullptr && *o.path != '\0', "file store: no path");
    store = c10::make_intrusive<c10d::FileStore>(std::string(o.path), o.world_size);
    store->setTimeout(timeout);
  } else {
    throw Invalid{"unknown store kind " + std::to_string(o.store_kind)};
  }
  if (o.prefix != nullptr && *o.prefix != '\0') {
    store = c10::make_intrusive<c10d::PrefixStore>(std::string(o.prefix), store);
  }
  return store;
}

c10::intrusive_ptr<c10d::Backend> make_backend(const rf_dist_options &o, const c10::intrusive_ptr<c10d::Store> &store,
                                               std::chrono::milliseconds timeout) {
  if (o.backend == RF_BACKEND_GLOO) {
    // create_default picks the transport device (GLOO_SOCKET_IFNAME, else this host's address, else loopback).
    auto opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, opts);
  }
  if (o.backend == RF_BACKEND_NCCL) {
#ifdef RELAXFLOW_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, opts);
#else
    throw Unsupported{"NCCL: relaxflow was built without the `nccl` cargo feature"};
#endif
  }
  throw Invalid{"unknown backend " + std::to_string(o.backend)};
}

void check_tensor(const rf_dist_group *g, const rf_tensor *t) {
  check(g != nullptr, "no process group");
  check(t != nullptr && t->defined(), "undefined tensor");
  check(t->layout() == c10::kStrided && t->is_contiguous(), "collectives take dense, contiguous tensors");
}

}  // namespace

extern "C" {

int32_t rf_dist_has_nccl(void) {
#ifdef RELAXFLOW_NCCL
  return 1;
#else
  return 0;
#endif
}

rf_dist_status rf_dist_group_new(const rf_dist_options *opts, rf_dist_group **out, char **err) {
  return guarded(err, [&] {
    check(opts != nullptr && out != nullptr, "null options or output");
    *out = nullptr;
    const rf_dist_options &o = *opts;
    check(o.world_size >= 1, "world size must be at least 1");
    check(o.rank >= 0 && o.rank < o.world_size,
          "rank " + std::to_string(o.rank) + " outside 0.." + std::to_string(o.world_size - 1));
    check(o.timeout_ms > 0, "timeout must be positive");
    const std::chrono::milliseconds timeout(o.timeout_ms);
    QuietRendezvous quiet;
    auto g = std::make_unique<rf_dist_group>();
    g->store = make_store(o, timeout);
    g->backend = make_backend(o, g->store, timeout);
    *out = g.release();
  });
}

rf_dist_status rf_dist_allreduce(rf_dist_group *g, rf_tensor *t, int32_t op, char **err) {
  return guarded(err, [&] {
    check_tensor(g, t);
    check(op == RF_OP_SUM || op == RF_OP_MIN || op == RF_OP_MAX, "unknown reduction " + std::to_string(op));
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == RF_OP_SUM ? c10d::ReduceOp::SUM : op == RF_OP_MIN ? c10d::ReduceOp::MIN : c10d::ReduceOp::MAX;
    g->backend->allreduce(ts, o)->wait();
  });
}

rf_dist_status rf_dist_allreduce_sum(rf_dist_group *g, rf_tensor *t, char **err) {
  return rf_dist_allreduce(g, t, RF_OP_SUM, err);
}

rf_dist_status rf_dist_broadcast(rf_dist_group *g, rf_tensor *t, int32_t root, char **err) {
  return guarded(err, [&] {
    check_tensor(g, t);
    check(root >= 0 && root < g->backend->getSize(), "broadcast root " + std::to_string(root) + " outside the group");
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    g->backend->broadcast(ts, o)->wait();
  });
}

rf_dist_status rf_dist_barrier(rf_dist_group *g, char **err) {
  return guarded(err, [&] {
    check(g != nullptr, "no process group");
    g->backend->barrier(c10d::BarrierOptions())->wait();
  });
}

void rf_dist_group_free(rf_dist_group *g) {
  if (g == nullptr) return;
  try {
    g->backend.reset();  // the group first: it may still talk through the store
    g->store.reset();
  } catch (...) {
  }
  delete g;
}

void rf_dist_free_error(char *err) { std::free(err); }

}  // extern "C"
