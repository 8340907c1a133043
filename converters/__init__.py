"""modelkit.converters: models from other tools into the graph IR and back out.

`onnx_import.load(path)` reads an ONNX file (opsets 13 and up) into a `Graph`, listing every
problem in one `ConversionError`; `mkb_import.load(path)` reads a `.mkb` file, so that
`modelkit.exporter.onnx_writer.save(mkb_import.load("m.mkb"), "m.onnx")` converts `.mkb -> ONNX`.
"""
