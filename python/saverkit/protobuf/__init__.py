"""Protocol buffer modules generated at build time from proto/saverkit/protobuf/*.proto."""
