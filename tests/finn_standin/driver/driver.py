"""TEST STAND-IN for FINN's generated driver.py: only its io_shape_dict."""

io_shape_dict = {
    "idt": ["DataType['UINT4']"],
    "odt": ["DataType['UINT4']"],
    "ishape_normal": [(1, 4, 4, 16)],
    "oshape_normal": [(1, 4, 4, 8)],
    "ishape_packed": [(1, 4, 4, 8)],
    "oshape_packed": [(1, 4, 4, 4)],
    "input_dma_name": ["idma0"],
    "output_dma_name": ["odma0"],
    "number_of_external_weights": 0,
    "num_inputs": 1,
    "num_outputs": 1,
}
