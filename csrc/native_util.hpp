// Internal to the native-ops shim (optim, amp, graph, coupling): turning every C++ exception into an rf_native_status.
#pragma once

#include "native.h"
#include "shim_errors.hpp"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace rf_native {

// The shim's own argument errors (RF_NATIVE_INVALID) and the message helpers, shared with the c10d shim.
using rf_shim::copy;
using rf_shim::fail;
using rf_shim::Invalid;

// Runs `f`, turning every exception into a status and a message (never a C++ backtrace across the boundary).
template <typename F>
rf_native_status guarded(char **err, F &&f) {
  if (err != nullptr) *err = nullptr;
  try {
    f();
    return RF_NATIVE_OK;
  } catch (const Invalid &e) {
    return fail(err, RF_NATIVE_INVALID, e.msg);
  } catch (const c10::Error &e) {
    return fail(err, RF_NATIVE_ERROR, e.what_without_backtrace());
  } catch (const std::exception &e) {
    return fail(err, RF_NATIVE_ERROR, e.what());
  } catch (...) {
    return fail(err, RF_NATIVE_ERROR, "unknown C++ exception in relaxflow's native shim");
  }
}

}  // namespace rf_native
