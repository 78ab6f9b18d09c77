package pobox_test

import (
	"fmt"
	"net/http"
	"net/netip"

	pobox "github.com/pobox-mesh/pobox/bindings/go"
)

const manifests = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
`

func Example() {
	mesh, err := pobox.New(pobox.Options{Node: "node-a", Zone: "zone-a"})
	if err != nil {
		panic(err)
	}
	defer mesh.Close()
	if err := mesh.Apply([]byte(manifests)); err != nil {
		panic(err)
	}
	for i := 0; i < 3; i++ {
		endpoint, err := mesh.Pick("web.default:http", netip.Addr{})
		if err != nil {
			panic(err)
		}
		fmt.Println(endpoint)
	}
	// Output:
	// 10.1.0.1:8080
	// 10.1.0.2:8080
	// 10.1.0.1:8080
}

func ExampleMesh_PickAddr() {
	mesh, _ := pobox.New(pobox.Options{})
	defer mesh.Close()
	_ = mesh.Apply([]byte(manifests))
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	endpoint, err := mesh.PickAddr(vip, netip.MustParseAddr("10.0.0.7"))
	fmt.Println(endpoint, err)
	// Output: 10.1.0.1:8080 <nil>
}

func ExampleMesh_NewRoute() {
	mesh, _ := pobox.New(pobox.Options{})
	defer mesh.Close()
	_ = mesh.Apply([]byte(manifests))
	route, err := mesh.NewRoute("web.default:http", "")
	if err != nil {
		panic(err)
	}
	defer route.Close()
	endpoints := make([]netip.AddrPort, 3)
	err = route.PickBatch(nil, endpoints)
	fmt.Println(endpoints, err)
	// Output: [10.1.0.1:8080 10.1.0.2:8080 10.1.0.1:8080] <nil>
}

func ExampleMesh_Pick_error() {
	mesh, _ := pobox.New(pobox.Options{})
	defer mesh.Close()
	_, err := mesh.Pick("web.default:http", netip.Addr{})
	fmt.Println(err)
	// Output: pobox: no Service matches web.default:http
}

func ExampleMesh_DialContext() {
	mesh, _ := pobox.New(pobox.Options{})
	defer mesh.Close()
	_ = mesh.Apply([]byte(manifests))
	// Every new connection of this client goes to an endpoint the mesh picks.
	client := &http.Client{Transport: &http.Transport{DialContext: mesh.DialContext}}
	_ = client // client.Get("http://web.default/") reaches 10.1.0.1:8080 or 10.1.0.2:8080
	route, _ := mesh.Route("tcp", "web.default:80")
	fmt.Println(route)
	// Output: 10.1.0.1:8080
}

func ExampleMesh_Version() {
	mesh, _ := pobox.New(pobox.Options{})
	defer mesh.Close()
	before := mesh.Version()
	_ = mesh.Apply([]byte(manifests))
	fmt.Println(before, mesh.Version(), mesh.Version() != before)
	// Output: 0 1 true
}
