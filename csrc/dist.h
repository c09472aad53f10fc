/* relaxflow's C API over PyTorch's distributed engine (c10d): one process group (Gloo, or NCCL when built with
 * the `nccl` cargo feature), its rendezvous store (TCPStore or FileStore, optionally under a key prefix), and the
 * three collectives the trainer needs. Every call catches every C++ exception and returns an rf_dist_status;
 * on failure *err receives a message allocated here, to be released with rf_dist_free_error. Rust side:
 * src/parallel/ffi.rs (keep the two in step). */
#ifndef RELAXFLOW_DIST_H
#define RELAXFLOW_DIST_H

#include <stdint.h>

#ifdef __cplusplus
namespace at { class Tensor; }
typedef at::Tensor rf_tensor; /* tch's tensor handle is a torch::Tensor* (torch-sys torch_api.h) */
extern "C" {
#else
typedef struct rf_tensor rf_tensor;
#endif

typedef struct rf_dist_group rf_dist_group;

typedef enum {
  RF_DIST_OK = 0,
  RF_DIST_ERROR = 1,    /* a collective or rendezvous failed (peer gone, connection refused, ...) */
  RF_DIST_TIMEOUT = 2,  /* the store or a collective ran past its timeout */
  RF_DIST_INVALID = 3,  /* bad arguments (null pointer, rank out of range, non-contiguous tensor, ...) */
  RF_DIST_UNSUPPORTED = 4 /* e.g. NCCL asked of a build without the `nccl` feature */
} rf_dist_status;

typedef enum { RF_STORE_TCP = 0, RF_STORE_FILE = 1 } rf_store_kind;
typedef enum { RF_BACKEND_GLOO = 0, RF_BACKEND_NCCL = 1 } rf_backend;

typedef struct {
  int32_t store_kind;   /* rf_store_kind */
  const char *host;     /* TCP: the store's host */
  uint16_t port;        /* TCP: the store's port */
  int32_t serve;        /* TCP: nonzero when this rank runs the store's server (rank 0 without a launcher's store) */
  const char *path;     /* FILE: the shared file (every rank the same path; removed when the last rank leaves) */
  const char *prefix;   /* optional (NULL or ""): every key under this prefix, e.g. a restart count */
  int32_t rank;
  int32_t world_size;
  int64_t timeout_ms;   /* the store's and the collectives' timeout */
  int32_t backend;      /* rf_backend */
} rf_dist_options;

/* 1 when the shim was compiled with NCCL, else 0. */
int32_t rf_dist_has_nccl(void);

/* Rendezvous and build the group; blocks until every rank has joined or the timeout passes. */
rf_dist_status rf_dist_group_new(const rf_dist_options *opts, rf_dist_group **out, char **err);

/* Sum of `t` over the ranks, written into `t` on every rank (dense, contiguous; same shape and dtype everywhere). */
rf_dist_status rf_dist_allreduce_sum(rf_dist_group *g, rf_tensor *t, char **err);
typedef enum { RF_OP_SUM = 0, RF_OP_MIN = 1, RF_OP_MAX = 2 } rf_reduce_op;
/* As rf_dist_allreduce_sum with the elementwise reduction `op` (rf_reduce_op). */
rf_dist_status rf_dist_allreduce(rf_dist_group *g, rf_tensor *t, int32_t op, char **err);

/* `t` of rank `root` copied into `t` on every rank. */
rf_dist_status rf_dist_broadcast(rf_dist_group *g, rf_tensor *t, int32_t root, char **err);

/* Returns when every rank has reached it. */
rf_dist_status rf_dist_barrier(rf_dist_group *g, char **err);

/* Tear the group and its store down (never fails; NULL is fine). */
void rf_dist_group_free(rf_dist_group *g);

void rf_dist_free_error(char *err);

#ifdef __cplusplus
}
#endif
#endif
