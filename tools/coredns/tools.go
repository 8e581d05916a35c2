//go:build tools

// Package tools records the command this module builds (CoreDNS, the local cluster's DNS
// for the real node's pods), so that `go mod tidy` keeps its modules in go.mod and go.sum.
package tools

import (
	_ "github.com/coredns/coredns"
)
