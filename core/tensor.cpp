#include "core/tensor.h"

#include <sstream>
#include <stdexcept>

#include "kernels/ops.h"

namespace nns {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  return "?";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

Tensor::Storage::Storage(size_t b, Device d) : bytes(b), device(d) {
  ptr = ops::device_alloc(d, b);
  ops::zero_bytes(d, ptr, b);
}

Tensor::Storage::~Storage() {
  if (!owned) return;
  try {
    ops::device_free(device, ptr);
  } catch (...) {
    // Freeing must not throw from a destructor; a failed CUDA free is reported elsewhere.
  }
}

Tensor Tensor::wrap(void* ptr, Shape shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(ptr, t.nbytes(), device);
  return t;
}

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), numel_(shape_numel(shape_)), dtype_(dtype), device_(device) {
  storage_ = std::make_shared<Storage>(nbytes(), device_);
}

Tensor Tensor::from_vector(const std::vector<float>& v, Shape shape) {
  Tensor t(std::move(shape));
  if (static_cast<int64_t>(v.size()) != t.numel())
    throw std::invalid_argument("from_vector: " + std::to_string(v.size()) +
                                " values for shape " + shape_str(t.shape()));
  std::copy(v.begin(), v.end(), t.f32());
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  if (i < 0 || i >= n)
    throw std::out_of_range("dim " + std::to_string(i) + " of a tensor of shape " +
                            shape_str(shape_));
  return shape_[i];
}

void Tensor::check_dtype(DType want, const char* what) const {
  if (dtype_ != want)
    throw std::logic_error(std::string("tensor of dtype ") + dtype_name(dtype_) +
                           " accessed as " + what);
}

float* Tensor::f32() { check_dtype(DType::F32, "F32"); return static_cast<float*>(raw()); }
const float* Tensor::f32() const { check_dtype(DType::F32, "F32"); return static_cast<const float*>(raw()); }
int64_t* Tensor::i64() { check_dtype(DType::I64, "I64"); return static_cast<int64_t*>(raw()); }
const int64_t* Tensor::i64() const { check_dtype(DType::I64, "I64"); return static_cast<const int64_t*>(raw()); }
int32_t* Tensor::i32() { check_dtype(DType::I32, "I32"); return static_cast<int32_t*>(raw()); }
const int32_t* Tensor::i32() const { check_dtype(DType::I32, "I32"); return static_cast<const int32_t*>(raw()); }
uint8_t* Tensor::u8() { check_dtype(DType::U8, "U8"); return static_cast<uint8_t*>(raw()); }
const uint8_t* Tensor::u8() const { check_dtype(DType::U8, "U8"); return static_cast<const uint8_t*>(raw()); }

void Tensor::resize(const Shape& shape) {
  int64_t n = shape_numel(shape);
  size_t bytes = static_cast<size_t>(n) * dtype_size(dtype_);
  if (!storage_ || storage_->bytes < bytes) {
    storage_ = std::make_shared<Storage>(bytes, device_);
  }
  shape_ = shape;
  numel_ = n;
}

Tensor Tensor::view(const Shape& shape) const {
  if (shape_numel(shape) != numel_)
    throw std::invalid_argument("view: cannot view " + shape_str(shape_) + " as " +
                                shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::clone() const { return to(device_); }

Tensor Tensor::to(Device device) const {
  Tensor t(shape_, dtype_, device);
  ops::copy_bytes(device, t.raw(), device_, raw(), nbytes());
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.dtype_ != dtype_ || src.numel_ != numel_)
    throw std::invalid_argument("copy_from: " + std::string(dtype_name(src.dtype_)) +
                                shape_str(src.shape_) + " into " + dtype_name(dtype_) +
                                shape_str(shape_));
  ops::copy_bytes(device_, raw(), src.device_, src.raw(), nbytes());
}

void Tensor::zero() {
  if (storage_) ops::zero_bytes(device_, raw(), nbytes());
}

void Tensor::fill(float v) {
  ops::Context ctx{device_, nullptr};
  ops::fill(ctx, numel_, v, f32());
}

std::vector<float> Tensor::to_vector() const {
  Tensor c = device_ == Device::CPU ? *this : to(Device::CPU);
  const float* p = c.f32();
  return std::vector<float>(p, p + numel_);
}

}  // namespace nns
