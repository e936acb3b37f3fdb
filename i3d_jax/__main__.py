from i3d_jax.launch import main

if __name__ == "__main__":
    main()
