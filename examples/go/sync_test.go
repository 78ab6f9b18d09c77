package main

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	pobox "github.com/pobox-mesh/pobox/bindings/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

func ptr[T any](v T) *T { return &v }

func slice(name string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		})
	}
	return s
}

// eventually polls cond until it holds; informers deliver asynchronously.
// The bound only keeps a broken test from hanging; nothing is timed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}

// picksAre reports whether picks for dest cover exactly want.
func picksAre(mesh *pobox.Mesh, dest string, want ...string) bool {
	seen := map[string]bool{}
	for i := 0; i < 4*len(want); i++ {
		got, err := mesh.Pick(dest, netip.Addr{})
		if err != nil {
			return false
		}
		seen[got.String()] = true
	}
	if len(seen) != len(want) {
		return false
	}
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

func TestPicksFollowTheInformers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewSimpleClientset()
	mesh, err := pobox.New(pobox.Options{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer mesh.Close()
	factory := informers.NewSharedInformerFactory(client, 0)
	if err := Sync(mesh, factory); err != nil {
		t.Fatal(err)
	}
	// Deferred calls run last first: cancel stops the informers, then
	// Shutdown waits for them.
	defer factory.Shutdown()
	defer cancel()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	services := client.CoreV1().Services("default")
	slices := client.DiscoveryV1().EndpointSlices("default")
	if _, err := services.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := slices.Create(ctx, slice("web-1", "10.1.0.1", "10.1.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both endpoints picked", func() bool {
		return picksAre(mesh, "web.default:http", "10.1.0.1:8080", "10.1.0.2:8080")
	})

	// An endpoint leaves, another arrives: picks follow.
	if _, err := slices.Update(ctx, slice("web-1", "10.1.0.2", "10.1.0.3"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the updated slice", func() bool {
		return picksAre(mesh, "10.96.0.10:80", "10.1.0.2:8080", "10.1.0.3:8080")
	})

	// A second slice adds to the set.
	if _, err := slices.Create(ctx, slice("web-2", "10.1.0.9"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the second slice", func() bool {
		return picksAre(mesh, "web.default:http", "10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.9:8080")
	})

	// The Service moves to another cluster IP.
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.20", []string{"10.96.0.20"}
	if _, err := services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new cluster IP", func() bool {
		_, err := mesh.Pick("10.96.0.10:80", netip.Addr{})
		return errors.Is(err, pobox.ErrNoService) && picksAre(mesh, "10.96.0.20:80", "10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.9:8080")
	})

	// Slices deleted: no eligible endpoint. Service deleted: no Service.
	for _, name := range []string{"web-1", "web-2"} {
		if err := slices.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "no endpoints", func() bool {
		_, err := mesh.Pick("web.default:http", netip.Addr{})
		return errors.Is(err, pobox.ErrNoEndpoints)
	})
	if err := services.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no Service", func() bool {
		_, err := mesh.Pick("web.default:http", netip.Addr{})
		return errors.Is(err, pobox.ErrNoService)
	})
}
