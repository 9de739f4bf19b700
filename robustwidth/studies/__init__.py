"""Multi-run studies: the width study (a sweep and its report) and the NTK width study."""
