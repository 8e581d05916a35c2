//go:build tools

// Package tools records the commands this module builds (pebble and pebble-challtestsrv),
// so that `go mod tidy` keeps their modules in go.mod and go.sum.
package tools

import (
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble"
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
)
