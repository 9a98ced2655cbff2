/* GPU presence check: loads the CUDA driver at run time and counts devices. Without a
 * driver or a device it exits 77, which CTest reports as skipped (never as passed). */
#include <dlfcn.h>
#include <stdio.h>

typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);

int main(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("SKIP: no CUDA driver (libcuda.so.1): %s\n", dlerror());
        return 77;
    }
    cu_init_fn cu_init = (cu_init_fn)dlsym(h, "cuInit");
    cu_count_fn cu_count = (cu_count_fn)dlsym(h, "cuDeviceGetCount");
    int n = 0;
    if (!cu_init || !cu_count || cu_init(0) != 0 || cu_count(&n) != 0 || n == 0) {
        printf("SKIP: CUDA driver present but no usable GPU\n");
        return 77;
    }
    printf("found %d CUDA device(s)\n", n);
    return 0;
}
