// Command acmesolver answers one ACME HTTP-01 challenge: the image cert-manager runs in its
// solver pods (the upstream main is in a module the Go module proxy here does not serve).
// Same flags as upstream's: --listen-port, --domain, --token, --key.
package main

import (
	"flag"
	"os"

	"github.com/cert-manager/cert-manager/pkg/issuer/acme/http/solver"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
)

func main() {
	s := &solver.HTTP01Solver{}
	flag.IntVar(&s.ListenPort, "listen-port", 8089, "port to listen on")
	flag.StringVar(&s.Domain, "domain", "", "the domain name to answer for")
	flag.StringVar(&s.Token, "token", "", "the challenge token")
	flag.StringVar(&s.Key, "key", "", "the challenge key")
	flag.Parse()
	log := logf.Log.WithName("acmesolver")
	if err := s.Listen(log); err != nil {
		log.Error(err, "solver failed")
		os.Exit(1)
	}
}
