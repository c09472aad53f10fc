// Internal to the native-ops shim (optim.cpp, amp.cpp): turning every C++ exception into an rf_native_status.
#pragma once

#include "native.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace rf_native {

// Thrown by the shim's own argument checks; reported as RF_NATIVE_INVALID.
struct Invalid {
  std::string msg;
};

inline char *copy(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p != nullptr) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

inline rf_native_status fail(char **err, rf_native_status code, const std::string &msg) {
  if (err != nullptr) *err = copy(msg);
  return code;
}

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
