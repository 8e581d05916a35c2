// Command controller runs cert-manager's controllers as one process, for the local
// environment (tools/localenv/acme.py). cert-manager publishes its controller main as a
// module of its own, which the Go module proxy here does not serve; this main wires the
// same library packages of the root module (github.com/cert-manager/cert-manager) with the
// upstream defaults, and only the issuer types the collection uses: ACME (HTTP-01 through
// an Ingress), CA and self-signed. Vault and Venafi are left out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// The controllers this process runs register themselves on import.
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// The issuer types the (Cluster)Issuer controllers can set up.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func quantity(name, value string) resource.Quantity {
	q, err := resource.ParseQuantity(value)
	if err != nil {
		fmt.Fprintf(os.Stderr, "controller: --%s=%q is not a quantity: %v\n", name, value, err)
		os.Exit(2)
	}
	return q
}

func list(value string) []string {
	var out []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the controller's own user")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "cert-manager", "where the Secrets of ClusterIssuers live (ACME account keys, CA keys)")
	solverImage := flag.String("acme-http01-solver-image", "", "image of the HTTP-01 solver pods (required)")
	solverNameservers := flag.String("acme-http01-solver-nameservers", "", "host:port of DNS servers for the HTTP-01 self-check, comma separated (default: the system resolver)")
	metricsAddress := flag.String("metrics-listen-address", "127.0.0.1:9402", "Prometheus metrics address")
	workers := flag.Int("concurrent-workers", 5, "workers per controller")
	flag.Parse()
	if *solverImage == "" {
		fmt.Fprintln(os.Stderr, "controller: --acme-http01-solver-image is required")
		os.Exit(2)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	log := logf.FromContext(ctx)

	// The upstream defaults (internal/apis/config/controller/v1alpha1/defaults.go).
	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace:        *clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: true,
		},
		ACMEOptions: controllerpkg.ACMEOptions{
			HTTP01SolverImage:                 *solverImage,
			HTTP01SolverResourceRequestCPU:    quantity("cpu request", "10m"),
			HTTP01SolverResourceRequestMemory: quantity("memory request", "64Mi"),
			HTTP01SolverResourceLimitsCPU:     quantity("cpu limit", "100m"),
			HTTP01SolverResourceLimitsMemory:  quantity("memory limit", "64Mi"),
			ACMEHTTP01SolverRunAsNonRoot:      true,
			HTTP01SolverNameservers:           list(*solverNameservers),
			DNS01CheckAuthoritative:           true,
			DNS01CheckRetryPeriod:             10 * time.Second,
		},
		IngressShimOptions: controllerpkg.IngressShimOptions{
			DefaultIssuerKind:                 "Issuer",
			DefaultIssuerGroup:                "cert-manager.io",
			DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"},
			GatewayAPIExtraProtocols:          sets.New[string](),
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		log.Error(err, "building the controller context")
		os.Exit(1)
	}
	shared, err := factory.Build()
	if err != nil {
		log.Error(err, "building the shared context")
		os.Exit(1)
	}

	listener, err := net.Listen("tcp", *metricsAddress)
	if err != nil {
		log.Error(err, "listening for metrics", "address", *metricsAddress)
		os.Exit(1)
	}
	metricsServer := shared.Metrics.NewServer(listener)
	go func() {
		if err := metricsServer.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "metrics server")
		}
	}()

	var wg sync.WaitGroup
	for name, construct := range controllerpkg.Known() {
		iface, err := construct(factory)
		if err != nil {
			log.Error(err, "constructing a controller", "controller", name)
			os.Exit(1)
		}
		wg.Add(1)
		go func(name string, iface controllerpkg.Interface) {
			defer wg.Done()
			log.Info("starting controller", "controller", name)
			if err := iface.Run(*workers, ctx); err != nil {
				log.Error(err, "controller failed", "controller", name)
				os.Exit(1)
			}
		}(name, iface)
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	wg.Wait()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = metricsServer.Shutdown(shutdown)
	log.Info("control loops exited")
}
