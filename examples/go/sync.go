package main

import (
	"encoding/json"
	"fmt"
	"log"

	pobox "github.com/pobox-mesh/pobox/bindings/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Sync keeps mesh in step with the Services and EndpointSlices that
// factory's informers watch: adds and updates are applied (the object as
// JSON, as kubectl would print it), deletes are deleted. Start the factory
// afterwards. Errors are logged: a rejected object leaves the mesh as it was.
func Sync(mesh *pobox.Mesh, factory informers.SharedInformerFactory) error {
	handlers := func(kind, apiVersion string) cache.ResourceEventHandlerFuncs {
		apply := func(obj any) {
			doc, err := manifest(obj, kind, apiVersion)
			if err == nil {
				err = mesh.Apply(doc)
			}
			if err != nil {
				log.Printf("pobox: apply %s: %v", kind, err)
			}
		}
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    apply,
			UpdateFunc: func(_, obj any) { apply(obj) },
			DeleteFunc: func(obj any) {
				if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = tomb.Obj
				}
				key, err := cache.MetaNamespaceKeyFunc(obj)
				if err != nil {
					log.Printf("pobox: delete %s: %v", kind, err)
					return
				}
				ns, name, _ := cache.SplitMetaNamespaceKey(key)
				if err := mesh.Delete(kind, ns, name); err != nil {
					log.Printf("pobox: delete %s %s: %v", kind, key, err)
				}
			},
		}
	}
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(handlers("Service", "v1")); err != nil {
		return err
	}
	_, err := factory.Discovery().V1().EndpointSlices().Informer().AddEventHandler(handlers("EndpointSlice", "discovery.k8s.io/v1"))
	return err
}

// manifest is obj as JSON with its kind and apiVersion, which informers
// leave empty on typed objects.
func manifest(obj any, kind, apiVersion string) ([]byte, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		c := o.DeepCopy()
		c.Kind, c.APIVersion = kind, apiVersion
		return json.Marshal(c)
	case *discoveryv1.EndpointSlice:
		c := o.DeepCopy()
		c.Kind, c.APIVersion = kind, apiVersion
		return json.Marshal(c)
	}
	return nil, fmt.Errorf("unexpected %T", obj)
}
