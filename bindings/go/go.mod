module ironhub.invalid/bindings/go

go 1.22
