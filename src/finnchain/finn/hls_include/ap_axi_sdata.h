// ap_axi_sdata.h for C simulation without Vitis HLS: finnchain's own, not Xilinx's.
//
// AXI4-Stream words with side channels, as finn-hlslib's streamtools.h and FINN's
// TLastMarker use them: ap_axiu / ap_axis (public fields data, keep, strb, user, last, id,
// dest) and qdma_axis (data, keep and last behind get_/set_ accessors). A side channel of
// width 0 is held as one bit, which C simulation never reads.
#ifndef FINNCHAIN_AP_AXI_SDATA_H
#define FINNCHAIN_AP_AXI_SDATA_H

#include <ap_int.h>

template <int D, int U, int TI, int TD>
struct ap_axis {
  ap_int<D> data;
  ap_uint<(D + 7) / 8> keep;
  ap_uint<(D + 7) / 8> strb;
  ap_uint<(U > 0 ? U : 1)> user;
  ap_uint<1> last;
  ap_uint<(TI > 0 ? TI : 1)> id;
  ap_uint<(TD > 0 ? TD : 1)> dest;
};

template <int D, int U, int TI, int TD>
struct ap_axiu {
  ap_uint<D> data;
  ap_uint<(D + 7) / 8> keep;
  ap_uint<(D + 7) / 8> strb;
  ap_uint<(U > 0 ? U : 1)> user;
  ap_uint<1> last;
  ap_uint<(TI > 0 ? TI : 1)> id;
  ap_uint<(TD > 0 ? TD : 1)> dest;
};

template <int D, int U, int TI, int TD>
struct qdma_axis {
  ap_uint<D> data;
  ap_uint<(D + 7) / 8> keep;
  ap_uint<1> last;

  ap_uint<D> get_data() const { return data; }
  void set_data(ap_uint<D> d) { data = d; }
  ap_uint<(D + 7) / 8> get_keep() const { return keep; }
  void set_keep(ap_uint<(D + 7) / 8> k) { keep = k; }
  ap_uint<1> get_last() const { return last; }
  void set_last(ap_uint<1> l) { last = l; }
};

#endif
