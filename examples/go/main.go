// Command pobox-proxy is a Go service that keeps pobox in sync with a
// cluster through client-go informers, and forwards HTTP requests to a
// Service through the mesh:
//
//	pobox-proxy -kubeconfig ~/.kube/config -node "$NODE_NAME" -listen 127.0.0.1:8080 -to http://web.default/
//
// Every connection the proxy opens goes to an endpoint pobox picks, as
// kube-proxy would send it from this node.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/signal"
	"syscall"

	pobox "github.com/pobox-mesh/pobox/bindings/go"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (empty: in-cluster)")
	node := flag.String("node", "", "the node this runs on")
	zone := flag.String("zone", "", "the node's zone")
	listen := flag.String("listen", "127.0.0.1:8080", "where to accept requests")
	to := flag.String("to", "http://web.default/", "the Service URL to forward to")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		log.Fatal(err)
	}
	mesh, err := pobox.New(pobox.Options{Node: *node, Zone: *zone})
	if err != nil {
		log.Fatal(err)
	}
	defer mesh.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	factory := informers.NewSharedInformerFactory(client, 0)
	if err := Sync(mesh, factory); err != nil {
		log.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("synced: mesh version %d", mesh.Version())

	target, err := url.Parse(*to)
	if err != nil {
		log.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{DialContext: mesh.DialContext}
	server := &http.Server{Addr: *listen, Handler: proxy}
	go func() {
		<-ctx.Done()
		server.Close()
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
