//go:build tools

// Package tools records the commands this module builds (metrics-server for the resource
// metrics API, kube-state-metrics for object state), so that `go mod tidy` keeps their
// modules in go.mod and go.sum.
package tools

import (
	_ "k8s.io/kube-state-metrics/v2"
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
