"""Generated protobuf code; the schemas are the .proto files here."""
