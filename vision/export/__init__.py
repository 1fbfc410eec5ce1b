"""Export: checkpoint -> ONNX fp32 + int8 (static QDQ) -> parity gate -> edge bundle."""
