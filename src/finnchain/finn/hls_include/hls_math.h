// hls_math.h for C simulation without Vitis HLS: finnchain's own, not Xilinx's.
//
// finn-hlslib's normalize.hpp includes it; in C simulation the standard library's functions
// serve, in namespace hls as Vitis HLS names them.
#ifndef FINNCHAIN_HLS_MATH_H
#define FINNCHAIN_HLS_MATH_H

#include <cmath>

namespace hls {
using std::abs;
using std::ceil;
using std::exp;
using std::floor;
using std::log;
using std::log2;
using std::pow;
using std::round;
using std::sqrt;
}  // namespace hls

#endif
