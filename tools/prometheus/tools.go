//go:build tools

// Package tools records the command this module builds: Prometheus itself, with every service
// discovery it ships (Debian's package leaves Kubernetes discovery out), so that `go mod tidy`
// keeps its module in go.mod and go.sum.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
