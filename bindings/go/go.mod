module github.com/pobox-mesh/pobox/bindings/go

go 1.24
