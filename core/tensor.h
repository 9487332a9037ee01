// Tensor: a shape, a dtype, a device and owned (shared) storage. Contiguous, row-major.
// Compute is float32; I64 exists for BatchNorm's num_batches_tracked and secrets' indexes,
// I32 for labels and indexes, U8 for raw images.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/device.h"

namespace nns {

enum class DType : uint8_t { F32 = 0, I64 = 1, I32 = 2, U8 = 3 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: F32, I64, I32, U8

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[6, 1, 5, 5]"

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised tensor.
  explicit Tensor(Shape shape, DType dtype = DType::F32, Device device = Device::CPU);

  static Tensor zeros(Shape shape, DType dtype = DType::F32, Device device = Device::CPU) {
    return Tensor(std::move(shape), dtype, device);
  }
  static Tensor from_vector(const std::vector<float>& v, Shape shape);
  // A tensor over memory it does not own (an execution plan's arena): valid while that memory
  // is (a resize() that grows it gives it storage of its own).
  static Tensor wrap(void* ptr, Shape shape, DType dtype = DType::F32, Device device = Device::CPU);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  void* raw() { return storage_ ? storage_->ptr : nullptr; }
  const void* raw() const { return storage_ ? storage_->ptr : nullptr; }
  // Typed access; throws when the dtype does not match.
  float* f32();
  const float* f32() const;
  int64_t* i64();
  const int64_t* i64() const;
  int32_t* i32();
  const int32_t* i32() const;
  uint8_t* u8();
  const uint8_t* u8() const;

  // Reuses the existing allocation when it is large enough (forward passes call this every
  // batch: reusing buffers avoids page faults). Contents are unspecified after a resize that
  // changes the size; zero them when needed.
  void resize(const Shape& shape);
  // Same storage, new shape with the same number of elements.
  Tensor view(const Shape& shape) const;
  // Deep copy (optionally onto another device).
  Tensor clone() const;
  Tensor to(Device device) const;
  // Copies the contents of src (same dtype and element count, any device) into this tensor.
  void copy_from(const Tensor& src);
  void zero();
  void fill(float v);  // F32 only

  // CPU-side convenience for tests and I/O.
  std::vector<float> to_vector() const;

 private:
  struct Storage {
    void* ptr = nullptr;
    size_t bytes = 0;
    Device device = Device::CPU;
    bool owned = true;
    Storage(size_t b, Device d);
    Storage(void* p, size_t b, Device d) : ptr(p), bytes(b), device(d), owned(false) {}
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
  };
  void check_dtype(DType want, const char* what) const;

  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  std::shared_ptr<Storage> storage_;
};

}  // namespace nns
