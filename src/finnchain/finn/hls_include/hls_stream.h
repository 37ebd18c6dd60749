// hls_stream.h for C simulation without Vitis HLS: finnchain's own, not Xilinx's.
//
// FINN compiles each HLS layer's C++ (finn-hlslib) into a program that runs it on .npy files
// (cppsim). Vitis HLS ships this header; where it is not installed, finnchain's FINN
// environment puts this one beside the open-source ap_int headers (HLS_PATH/include).
//
// hls::stream<T> is a FIFO of unbounded depth (C simulation runs a dataflow region's
// functions one after the other, so a stream must hold everything its producer writes), with
// the interface finn-hlslib and FINN's generated code use: read, write, the >> and <<
// operators, read_nb, write_nb, empty, full, size and a name given to the constructor.
// Reading an empty stream is what would hang the hardware: the program stops there, naming
// the stream, rather than computing on a value nobody wrote. Data left in a stream when it
// goes out of scope is reported, as Vitis HLS reports it.
#ifndef FINNCHAIN_HLS_STREAM_H
#define FINNCHAIN_HLS_STREAM_H

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace hls {

template <typename T, int DEPTH = 0>
class stream {
 public:
  stream() : name_("hls::stream") {}
  explicit stream(const char *name) : name_(name ? name : "hls::stream") {}
  stream(const stream &) = delete;
  stream &operator=(const stream &) = delete;
  ~stream() {
    if (!fifo_.empty())
      std::fprintf(stderr, "WARNING: hls::stream '%s' contains leftover data (%zu words)\n",
                   name_.c_str(), fifo_.size());
  }

  bool empty() const { return fifo_.empty(); }
  bool full() const { return false; }  // unbounded in C simulation
  std::size_t size() const { return fifo_.size(); }
  const char *name() const { return name_.c_str(); }

  T read() {
    if (fifo_.empty()) {
      std::fprintf(stderr,
                   "ERROR: hls::stream '%s' is read while empty (the hardware would hang "
                   "here)\n", name_.c_str());
      std::abort();
    }
    T value = fifo_.front();
    fifo_.pop_front();
    return value;
  }
  void read(T &value) { value = read(); }
  bool read_nb(T &value) {
    if (fifo_.empty()) return false;
    value = read();
    return true;
  }
  void write(const T &value) { fifo_.push_back(value); }
  bool write_nb(const T &value) {
    write(value);
    return true;
  }
  void operator>>(T &value) { read(value); }
  void operator<<(const T &value) { write(value); }

 private:
  std::string name_;
  std::deque<T> fifo_;
};

}  // namespace hls

#endif
