"""Generated protobuf/gRPC stubs of the Wisp contracts (see proto/wisp/v1)."""
