/* Replays fuzz inputs through the libFuzzer entry point without libFuzzer, so that the
 * seed corpus and every fixture run under any compiler (gcc included) as a unit test.
 * usage: test_events_fuzz_replay [DIR|FILE…] (default: the seed corpus); a directory's
 * regular files are all replayed. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    static unsigned char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* An exact-size heap copy, so that ASan sees any read past the end. */
    unsigned char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, buf, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    return 0;
}

int main(int argc, char **argv)
{
#ifdef GM_FUZZ_CORPUS
    if (argc < 2) {
        static char *def[] = {NULL, GM_FUZZ_CORPUS, NULL};
        argv = def;
        argc = 2;
    }
#endif
    int files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st)) {
            perror(argv[i]);
            return 2;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]))
                return 2;
            files++;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            perror(argv[i]);
            return 2;
        }
        struct dirent *de;
        while ((de = readdir(dir))) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
            if (stat(path, &st) || !S_ISREG(st.st_mode))
                continue;
            if (replay_file(path))
                return 2;
            files++;
        }
        closedir(dir);
    }
    printf("replayed %d inputs, all invariants held\n", files);
    return files > 0 ? 0 : 2;
}
